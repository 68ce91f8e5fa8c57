//! The internal ControllerService: replicas register, routers watch the routing table, replicas
//! on other machines fetch packages of application code. Every
//! call carries the cluster token (checked by `photon_router::cluster_auth::require_token` in
//! front of this service); a registration also carries the registering replica's own secret.

use std::pin::Pin;
use std::sync::Arc;

use photon_config::AppCatalog;

use photon_proto::v1 as pb;
use photon_proto::v1::controller_service_server::ControllerService;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::actor::ControllerHandle;

/// gRPC front of a [`ControllerHandle`].
pub struct ControllerGrpc {
    controller: ControllerHandle,
    /// The key of the replicas' registration secrets.
    registration_key: String,
    /// Where packages of application code come from.
    catalog: Arc<dyn AppCatalog>,
}

impl ControllerGrpc {
    /// The service of `controller`, checking registrations against `registration_key`, serving
    /// the packages of `catalog`.
    pub fn new(controller: ControllerHandle, registration_key: String, catalog: Arc<dyn AppCatalog>) -> Self {
        ControllerGrpc { controller, registration_key, catalog }
    }

    /// Refuses a call about `replica_id` that does not carry that replica's secret: without it,
    /// any process with the cluster token could register as another replica and take its
    /// traffic.
    fn check_replica<T>(&self, request: &Request<T>, replica_id: &str) -> Result<(), Status> {
        let expected = photon_router::cluster_auth::registration_secret(&self.registration_key, replica_id);
        let presented = request.metadata().get(photon_router::cluster_auth::REPLICA_SECRET_HEADER);
        match presented {
            Some(given) if photon_router::cluster_auth::same(given.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(Status::permission_denied(format!("not replica {replica_id}'s registration secret"))),
        }
    }
}

type TableStream = Pin<Box<dyn Stream<Item = Result<pb::RoutingTable, Status>> + Send>>;
type PackageStream = Pin<Box<dyn Stream<Item = Result<pb::PackageChunk, Status>> + Send>>;

/// The pieces a package travels in (gRPC messages stay well under their 4 MiB default limit).
const PACKAGE_CHUNK: usize = 1 << 20;

#[tonic::async_trait]
impl ControllerService for ControllerGrpc {
    async fn register_replica(
        &self,
        request: Request<pb::RegisterReplicaRequest>,
    ) -> Result<Response<pb::RegisterReplicaResponse>, Status> {
        self.check_replica(&request, &request.get_ref().replica_id)?;
        let r = request.into_inner();
        let wanted = self
            .controller
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
        self.check_replica(&request, &request.get_ref().replica_id)?;
        let r = request.into_inner();
        self.controller
            .report_models(r.replica_id, r.model_ids)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ReportModelsResponse {}))
    }

    type FetchPackageStream = PackageStream;

    async fn fetch_package(
        &self,
        request: Request<pb::FetchPackageRequest>,
    ) -> Result<Response<PackageStream>, Status> {
        let name = request.into_inner().name;
        let archive = match self.catalog.package(&name).await {
            Some(Ok(path)) => path,
            Some(Err(e)) => return Err(Status::not_found(e)),
            None => return Err(Status::not_found("this controller serves no packages")),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = match std::fs::File::open(&archive) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!("{}: {e}", archive.display()))));
                    return;
                }
            };
            let mut buffer = vec![0u8; PACKAGE_CHUNK];
            loop {
                match file.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(Ok(pb::PackageChunk { data: buffer[..n].to_vec().into() })).is_err() {
                            return; // the replica went away
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    type WatchRoutingTableStream = TableStream;

    async fn watch_routing_table(
        &self,
        request: Request<pb::WatchRoutingTableRequest>,
    ) -> Result<Response<TableStream>, Status> {
        tracing::debug!(subscriber = %request.get_ref().subscriber, "routing table subscriber");
        let stream = tokio_stream::wrappers::WatchStream::new(self.controller.routing_table())
            .filter(|t| t.version > 0)
            .map(|t| Ok(pb::RoutingTable::from(t.as_ref())));
        Ok(Response::new(Box::pin(stream)))
    }
}
