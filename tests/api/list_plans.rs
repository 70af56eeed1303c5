//! ListBookings plans (issue 21): on a table large enough for the planner to
//! prefer indexes, every filter's page reads its own rows, not the table. Each
//! case's SQL is built by `booking::list::list_sql`, the code the service runs,
//! and explained with ANALYZE; a Seq Scan on tickets, or any scan of tickets that
//! reads (returns or filters away) more rows than a page's worth of work, fails.

use std::time::Instant;

use chrono::NaiveDate;
use serde_json::Value;
use spacet::booking::{
    list::{self, Cursor, ListQuery},
    Destination, TicketStatus,
};
use sqlx::{Connection, PgConnection};

use crate::helpers::TestApp;

/// 400 days × 3 pads × 100 tickets, booked in launch-day order; one flight in 100
/// cancelled whole; one ticket in 40,000 named "Zyxwvut".
const SEED: &str = r#"
INSERT INTO flights (id, launchpad_id, launch_day, destination, seats, seats_booked)
SELECT gen_random_uuid(), pad, day::date,
       (ARRAY['MARS','MOON','PLUTO','ASTEROID_BELT','EUROPA','TITAN','GANYMEDE'])[extract(isodow FROM day)::int],
       100, 100
FROM unnest(ARRAY['5e9e4502f509094188566f88','5e9e4501f509094ba4566f84','5e9e4502f509092b78566f87']) AS pad,
     generate_series(DATE '2050-01-03', DATE '2050-01-03' + 399, interval '1 day') AS day;

WITH f AS (
  SELECT id, launchpad_id, launch_day, destination,
         row_number() OVER (ORDER BY launch_day, launchpad_id) - 1 AS k
  FROM flights
),
t AS (
  SELECT f.*, f.k * 100 + s AS i FROM f, generate_series(0, 99) AS s
)
INSERT INTO tickets (id, flight_id, first_name, last_name, gender, birthday, launchpad_id,
                     launch_day, destination, status, cancellation_reason, created_at, updated_at)
SELECT gen_random_uuid(), t.id,
       (ARRAY['Ada','Grace','Alan','Katherine','Yuri','Valentina','Neil','Sally','Mae','Chris'])[1 + (t.i * 7919) % 10],
       CASE WHEN t.i % 40000 = 7 THEN 'Zyxwvut'
            ELSE initcap((ARRAY['ka','lo','mi','ne','ro','sa','ti','vo','be','da'])[1 + (t.i * 31) % 10]
                      || (ARRAY['ven','lan','son','ter','mer','vik','dor','bel','nis','rak'])[1 + (t.i * 17) % 10])
       END,
       'FEMALE', DATE '1950-01-01' + (t.i % 18000)::int, t.launchpad_id, t.launch_day, t.destination,
       CASE WHEN t.k % 100 = 42 THEN 'CANCELLED' ELSE 'CONFIRMED' END,
       CASE WHEN t.k % 100 = 42 THEN 'USER_REQUESTED' END,
       TIMESTAMPTZ '2026-01-01 00:00:00Z' + t.i * interval '1 millisecond',
       TIMESTAMPTZ '2026-01-01 00:00:00Z' + t.i * interval '1 millisecond'
FROM t;

-- What bookings keep: each flight's first booking time.
UPDATE flights f SET first_booked_at = t.first
FROM (SELECT flight_id, min(created_at) AS first FROM tickets GROUP BY flight_id) t
WHERE t.flight_id = f.id;
"#;

const KSC: &str = "5e9e4502f509094188566f88";

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

/// Every rows a plan node read from tickets: returned plus filtered away, times
/// its loops, summed over the plan; and the first forbidden node, if any.
/// The plan in one line: node types, with their index or relation.
fn outline(node: &Value) -> String {
    let name = node["Node Type"].as_str().unwrap_or("?");
    let on = node["Index Name"]
        .as_str()
        .or(node["Relation Name"].as_str())
        .map_or(String::new(), |n| format!(" {n}"));
    let children: Vec<String> = node["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(outline)
        .collect();
    if children.is_empty() {
        format!("{name}{on}")
    } else {
        format!("{name}{on}({})", children.join(", "))
    }
}

fn rows_read(node: &Value, total: &mut f64, bad: &mut Option<String>) {
    let on_tickets = node["Relation Name"] == "tickets"
        || node["Index Name"]
            .as_str()
            .is_some_and(|i| i.starts_with("tickets"));
    let kind = node["Node Type"].as_str().unwrap_or("");
    if on_tickets {
        if kind == "Seq Scan" {
            bad.get_or_insert_with(|| "a Seq Scan on tickets".into());
        }
        if kind != "Bitmap Index Scan" {
            let loops = node["Actual Loops"].as_f64().unwrap_or(1.0);
            let read = node["Actual Rows"].as_f64().unwrap_or(0.0)
                + node["Rows Removed by Filter"].as_f64().unwrap_or(0.0)
                + node["Rows Removed by Index Recheck"]
                    .as_f64()
                    .unwrap_or(0.0);
            *total += read * loops;
        }
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        rows_read(child, total, bad);
    }
}

#[tokio::test]
async fn every_list_filter_reads_its_page_not_the_table() {
    let app = TestApp::spawn().await;
    // The seed takes longer than the service's statement timeout: its own connection.
    let mut db = PgConnection::connect_with(&app.db).await.unwrap();
    let started = Instant::now();
    sqlx::raw_sql(SEED).execute(&mut db).await.unwrap();
    // VACUUM cannot run in the seed's (implicit) transaction, nor two in one.
    for table in ["VACUUM ANALYZE flights", "VACUUM ANALYZE tickets"] {
        sqlx::raw_sql(table).execute(&mut db).await.unwrap();
    }
    println!(
        "seeded 120,000 tickets in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A cursor in the middle of the table, to page from.
    let row = sqlx::query!(
        "SELECT created_at, id FROM tickets ORDER BY created_at, id OFFSET 60000 LIMIT 1"
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let mid = Cursor {
        created_at: row.created_at,
        id: row.id,
    };
    let q = |f: &dyn Fn(&mut ListQuery)| {
        let mut query = ListQuery {
            limit: 20,
            ..ListQuery::default()
        };
        f(&mut query);
        query
    };
    let cases: Vec<(&str, ListQuery)> = vec![
        ("no filter", q(&|_| {})),
        ("no filter, after a cursor", q(&|x| x.after = Some(mid))),
        (
            "launchpad (whole id)",
            q(&|x| x.launchpad = Some(KSC.into())),
        ),
        (
            "launchpad (substring)",
            q(&|x| x.launchpad = Some("f509094188".into())),
        ),
        (
            "one day",
            q(&|x| {
                x.launch_from = Some(day("2050-10-01"));
                x.launch_to = Some(day("2050-10-01"));
            }),
        ),
        (
            "launchpad + one day",
            q(&|x| {
                x.launchpad = Some(KSC.into());
                x.launch_from = Some(day("2050-10-01"));
                x.launch_to = Some(day("2050-10-01"));
            }),
        ),
        (
            "seven days",
            q(&|x| {
                x.launch_from = Some(day("2050-10-01"));
                x.launch_to = Some(day("2050-10-07"));
            }),
        ),
        (
            "launchpad + 31 days, after a cursor",
            q(&|x| {
                x.launchpad = Some(KSC.into());
                x.launch_from = Some(day("2050-09-20"));
                x.launch_to = Some(day("2050-10-20"));
                x.after = Some(mid);
            }),
        ),
        (
            "launchpad + launch_from, last month",
            q(&|x| {
                x.launchpad = Some(KSC.into());
                x.launch_from = Some(day("2051-01-10"));
            }),
        ),
        (
            "launchpad + launch_from, half-way (200 days)",
            q(&|x| {
                x.launchpad = Some(KSC.into());
                x.launch_from = Some(day("2050-07-22"));
            }),
        ),
        (
            "launch_from + launch_to, 100 days late in the table",
            q(&|x| {
                x.launch_from = Some(day("2050-11-01"));
                x.launch_to = Some(day("2051-02-08"));
            }),
        ),
        (
            "status CANCELLED (1 %)",
            q(&|x| x.statuses = Some(vec![TicketStatus::Cancelled])),
        ),
        (
            "status CANCELLED, one day with none",
            q(&|x| {
                x.statuses = Some(vec![TicketStatus::Cancelled]);
                x.launch_from = Some(day("2050-10-01"));
                x.launch_to = Some(day("2050-10-01"));
            }),
        ),
        (
            "status CANCELLED + launchpad + day, none",
            q(&|x| {
                x.statuses = Some(vec![TicketStatus::Cancelled]);
                x.launchpad = Some(KSC.into());
                x.launch_from = Some(day("2050-10-01"));
                x.launch_to = Some(day("2050-10-01"));
            }),
        ),
        (
            "destination + status CONFIRMED",
            q(&|x| {
                x.destinations = Some(vec![Destination::Moon]);
                x.statuses = Some(vec![TicketStatus::Confirmed]);
            }),
        ),
        (
            "last_name, common substring",
            q(&|x| x.last_name = Some("son".into())),
        ),
        (
            "last_name, rare",
            q(&|x| x.last_name = Some("zyxwv".into())),
        ),
        (
            "last_name rare + first_name",
            q(&|x| {
                x.last_name = Some("zyxwv".into());
                x.first_name = Some("ada".into());
            }),
        ),
        ("first_name", q(&|x| x.first_name = Some("grace".into()))),
        (
            "last_name, 2 letters, common",
            q(&|x| x.last_name = Some("ka".into())),
        ),
        (
            "last_name, 2 letters, rare (the Zyxwvut)",
            q(&|x| x.last_name = Some("yx".into())),
        ),
        (
            "first_name, 1 letter, common, + last_name 2 letters",
            q(&|x| {
                x.first_name = Some("a".into());
                x.last_name = Some("ve".into());
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (label, query) in &cases {
        let (query, pads) = list::resolve(&app.pool, query)
            .await
            .unwrap()
            .expect("the case can match");
        let mut sql = list::list_sql("EXPLAIN (ANALYZE, FORMAT JSON) ", &query, pads)
            .expect("the case matches something");
        let (plan,): (Value,) = sql.build_query_as().fetch_one(&mut db).await.unwrap();
        let root = &plan[0]["Plan"];
        let (mut read, mut bad) = (0.0, None);
        rows_read(root, &mut read, &mut bad);
        // A page of 21 rows; the merged day range reads up to 21 per day (31 × 21).
        let budget = 1_000.0;
        println!(
            "{label:<42} {:>7.0} rows read, {:>4.0} returned, {:.2} ms: {}",
            read,
            root["Actual Rows"].as_f64().unwrap_or(0.0),
            plan[0]["Execution Time"].as_f64().unwrap_or(0.0),
            outline(root)
        );
        if let Some(bad) = bad.or_else(|| {
            (read > budget).then(|| format!("{read} rows of tickets read for one page"))
        }) {
            failures.push(format!("{label}: {bad}\n{:#}", root));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The long ranges start their walk at the flights' first booking time: the
    // pages are still exactly those of the plain query, page after page, and a
    // range with no flight is empty without a walk.
    for (pad, from, to) in [
        (Some(KSC), "2050-07-22", None),
        (None, "2050-11-01", Some("2051-02-08")),
        (Some(KSC), "2049-01-01", Some("2050-03-01")),
    ] {
        let mut query = ListQuery {
            limit: 100,
            launchpad: pad.map(str::to_string),
            launch_from: Some(day(from)),
            launch_to: to.map(day),
            ..ListQuery::default()
        };
        let expected: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM tickets WHERE ($1::text IS NULL OR launchpad_id = $1)
               AND launch_day >= $2 AND ($3::date IS NULL OR launch_day <= $3)
             ORDER BY created_at, id LIMIT 300",
        )
        .bind(pad)
        .bind(day(from))
        .bind(to.map(day))
        .fetch_all(&mut db)
        .await
        .unwrap();
        let mut listed = Vec::new();
        while listed.len() < 300 {
            let (page, next) = list::list(&app.pool, &query).await.unwrap();
            listed.extend(page.iter().map(|t| t.id));
            match next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, expected, "{pad:?} {from}..{to:?}");
    }
    let before_any_flight = ListQuery {
        limit: 20,
        launch_from: Some(day("2030-01-01")),
        launch_to: Some(day("2049-12-31")),
        ..ListQuery::default()
    };
    assert!(
        list::resolve(&app.pool, &before_any_flight)
            .await
            .unwrap()
            .is_none(),
        "no flight in the range: nothing to walk"
    );
    // Names too short for a trigram: none matching is nothing, without a walk;
    // a rare one lists exactly the tickets that contain it.
    let no_name = ListQuery {
        limit: 20,
        last_name: Some("qq".into()),
        ..ListQuery::default()
    };
    assert!(list::resolve(&app.pool, &no_name).await.unwrap().is_none());
    let rare = ListQuery {
        limit: 100,
        last_name: Some("YX".into()),
        ..ListQuery::default()
    };
    let (page, _) = list::list(&app.pool, &rare).await.unwrap();
    let expected: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM tickets WHERE lower(last_name) LIKE '%yx%' ORDER BY created_at, id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(expected.len(), 3, "the seed's Zyxwvuts");
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), expected);
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
}
