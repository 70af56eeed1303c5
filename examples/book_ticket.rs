//! A gRPC client of SpaceT: books a ticket, lists tickets, cancels the ticket.
//!
//! `cargo run --example book_ticket -- [--token JWT] [--addr http://127.0.0.1:8081]
//!  [--pad ID] [--date YYYY-MM-DD] [--destination MARS] [--first-name Ada]
//!  [--last-name Lovelace]`
//!
//! The bearer token comes from `--token`, else `SPACET_TOKEN` (against the default
//! run: `SPACET_TOKEN=$(target/release/spacet token --role passenger --subject ada)`);
//! without either, no `authorization` header is sent (a service with AUTH_MODE=none).

use anyhow::Context;
use tonic::{metadata::MetadataValue, service::Interceptor, Request, Status};

use spacet::proto::{
    self, space_t_service_client::SpaceTServiceClient, BookingRequest, ListTicketsRequest, TicketId,
};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Adds `authorization: Bearer TOKEN` to every call, when there is a token.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = arg(&args, "--addr", "http://127.0.0.1:8081");
    let pad = arg(&args, "--pad", "5e9e4502f509094188566f88");
    let date = arg(&args, "--date", "2049-12-01");
    let destination = arg(&args, "--destination", "MARS");
    let day = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .context("--date must be YYYY-MM-DD")?;
    let destination = proto::Destination::from_str_name(&destination)
        .context("--destination: MARS, MOON, PLUTO, ...")?;

    let token = args
        .iter()
        .position(|a| a == "--token")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("SPACET_TOKEN").ok())
        .map(|token| token.trim().to_string())
        .filter(|token| !token.is_empty());
    let bearer = Bearer(
        token
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .context("the token is not a valid header value")?,
    );
    let channel = tonic::transport::Endpoint::from_shared(addr.clone())
        .with_context(|| format!("--addr {addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut client = SpaceTServiceClient::with_interceptor(channel, bearer);
    let ticket = client
        .launch_booking(BookingRequest {
            first_name: arg(&args, "--first-name", "Ada"),
            last_name: arg(&args, "--last-name", "Lovelace"),
            gender: proto::Gender::Female as i32,
            birthday: Some(spacet::api::convert::day_timestamp(
                chrono::NaiveDate::from_ymd_opt(1990, 12, 1).unwrap(),
            )),
            launchpad_id: pad.clone(),
            launch_date: Some(spacet::api::convert::day_timestamp(day)),
            destination_id: destination as i32,
            request_id: String::new(),
            owner: String::new(),
        })
        .await?
        .into_inner();
    println!("booked {}", serde_json::to_string(&ticket)?);

    let page = client
        .list_bookings(ListTicketsRequest {
            launchpad_id: Some(pad),
            limit: 5,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("listed {} ticket(s) on the pad", page.tickets.len());

    client
        .cancel_booking(TicketId {
            id: ticket.id.clone(),
        })
        .await?;
    let cancelled = client
        .get_booking(TicketId { id: ticket.id })
        .await?
        .into_inner();
    println!("cancelled {}", serde_json::to_string(&cancelled)?);
    Ok(())
}
