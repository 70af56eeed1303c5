//! gRPC `RocketService`.

use std::pin::Pin;

use tonic::{Request, Response, Status};

use crate::{app::AppState, proto};

/// Implementation of `spacet.v1.RocketService`.
pub struct RocketApi {
    #[allow(dead_code)]
    state: AppState,
}

impl RocketApi {
    pub fn new(state: AppState) -> RocketApi {
        RocketApi { state }
    }
}

#[tonic::async_trait]
impl proto::rocket_service_server::RocketService for RocketApi {
    async fn list_rockets(
        &self,
        _r: Request<proto::ListRocketsRequest>,
    ) -> Result<Response<proto::ListRocketsResponse>, Status> {
        Err(Status::unimplemented("rockets are not built yet"))
    }
    async fn get_rocket(
        &self,
        _r: Request<proto::GetRocketRequest>,
    ) -> Result<Response<proto::Rocket>, Status> {
        Err(Status::unimplemented("rockets are not built yet"))
    }
    type WatchRocketsStream =
        Pin<Box<dyn futures::Stream<Item = Result<proto::Rocket, Status>> + Send>>;
    async fn watch_rockets(
        &self,
        _r: Request<proto::WatchRocketsRequest>,
    ) -> Result<Response<Self::WatchRocketsStream>, Status> {
        Err(Status::unimplemented("rockets are not built yet"))
    }
}
