//! Supervision: a server or worker that ends before shutdown stops the application
//! with an error naming it, within the grace period, instead of leaving a process
//! that looks healthy.

use std::time::{Duration, Instant};

use spacet::{app::App, clock::Clock};

use crate::helpers::{fresh_database, test_now, test_settings};

async fn app_with(grace: &str) -> App {
    let db = fresh_database().await;
    App::build(
        test_settings(&db, &[("SHUTDOWN_GRACE_PERIOD", grace)]),
        Clock::fixed(test_now()),
    )
    .await
    .expect("app builds")
}

#[tokio::test]
async fn a_worker_that_fails_stops_the_app_with_its_name_within_the_grace_period() {
    let mut app = app_with("3s").await;
    let shutdown = app.shutdown_token();
    app.supervise("doomed worker", async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        anyhow::bail!("lost its connection for good")
    });
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), app.run_until_stopped())
        .await
        .expect("the app stops by itself");
    let error = format!("{:#}", result.expect_err("a failed worker is a failed app"));
    assert!(error.contains("doomed worker failed"), "{error}");
    assert!(error.contains("lost its connection for good"), "{error}");
    assert!(shutdown.is_cancelled(), "the failure starts the shutdown");
    // Failure at ~0.3 s, then the normal shutdown within the 3 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_worker_that_returns_or_panics_early_is_a_failure_too() {
    let mut app = app_with("3s").await;
    app.supervise("quitter", async { Ok(()) });
    let error = format!("{:#}", app.run_until_stopped().await.unwrap_err());
    assert!(error.contains("quitter stopped before shutdown"), "{error}");

    let mut app = app_with("3s").await;
    app.supervise("panicker", async {
        tokio::task::yield_now().await;
        panic!("worker bug")
    });
    let error = format!("{:#}", app.run_until_stopped().await.unwrap_err());
    assert!(error.contains("panicked"), "{error}");
}

#[tokio::test]
async fn a_clean_shutdown_is_ok() {
    let mut app = app_with("3s").await;
    let shutdown = app.shutdown_token();
    app.supervise("patient worker", {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            Ok(())
        }
    });
    let running = tokio::spawn(app.run_until_stopped());
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    running
        .await
        .unwrap()
        .expect("stopping on request is not a failure");
}
