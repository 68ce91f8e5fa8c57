//! The internal ControllerService: replicas register, routers watch the routing table.

use std::pin::Pin;

use photon_proto::v1 as pb;
use photon_proto::v1::controller_service_server::ControllerService;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::actor::ControllerHandle;

/// gRPC front of a [`ControllerHandle`].
pub struct ControllerGrpc(pub ControllerHandle);

type TableStream = Pin<Box<dyn Stream<Item = Result<pb::RoutingTable, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerService for ControllerGrpc {
    async fn register_replica(
        &self,
        request: Request<pb::RegisterReplicaRequest>,
    ) -> Result<Response<pb::RegisterReplicaResponse>, Status> {
        let r = request.into_inner();
        let wanted = self
            .0
            .register(r.replica_id.clone(), r.address, r.data_address, r.pid)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if wanted {
            Ok(Response::new(pb::RegisterReplicaResponse {}))
        } else {
            Err(Status::not_found(format!("replica {} is not wanted by the controller", r.replica_id)))
        }
    }

    async fn report_models(
        &self,
        request: Request<pb::ReportModelsRequest>,
    ) -> Result<Response<pb::ReportModelsResponse>, Status> {
        let r = request.into_inner();
        self.0.report_models(r.replica_id, r.model_ids).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ReportModelsResponse {}))
    }

    type WatchRoutingTableStream = TableStream;

    async fn watch_routing_table(
        &self,
        request: Request<pb::WatchRoutingTableRequest>,
    ) -> Result<Response<TableStream>, Status> {
        tracing::debug!(subscriber = %request.get_ref().subscriber, "routing table subscriber");
        let stream = tokio_stream::wrappers::WatchStream::new(self.0.routing_table())
            .filter(|t| t.version > 0)
            .map(|t| Ok(pb::RoutingTable::from(t.as_ref())));
        Ok(Response::new(Box::pin(stream)))
    }
}
