//! Clients of the replicas' control service (health, load, reconfigure, metrics): one per
//! replica, made on first use and reused by every caller, so a health check or a scrape does not
//! open a connection of its own. Every call presents the cluster token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use photon_proto::v1::replica_service_client::ReplicaServiceClient;

/// A client of one replica's control service.
pub(crate) type ControlClient = ReplicaServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        photon_router::cluster_auth::AttachToken,
    >,
>;

/// The clients of the replicas, by control address; cheap to clone (one shared map).
#[derive(Clone, Default)]
pub struct ReplicaClients {
    clients: Arc<Mutex<HashMap<String, ControlClient>>>,
}

impl ReplicaClients {
    /// The client of the replica at `address` (a clone sharing its connection).
    pub(crate) fn get(&self, address: &str) -> ControlClient {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.entry(address.to_string()).or_insert_with(|| connect_lazily(address)).clone()
    }

    /// Forgets the clients of replicas whose address `live` no longer names.
    pub(crate) fn retain(&self, live: impl Fn(&str) -> bool) {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).retain(|address, _| live(address));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A client that connects on its first call (and again after the connection breaks).
fn connect_lazily(address: &str) -> ControlClient {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap_or_else(|_| tonic::transport::Endpoint::from_static("http://127.0.0.1:1"))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    ReplicaServiceClient::with_interceptor(endpoint.connect_lazy(), photon_router::cluster_auth::AttachToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_client_per_replica_until_it_is_gone() {
        let clients = ReplicaClients::default();
        clients.get("127.0.0.1:1");
        clients.get("127.0.0.1:1");
        clients.clone().get("127.0.0.1:2");
        assert_eq!(clients.len(), 2);
        clients.retain(|address| address.ends_with(":2"));
        assert_eq!(clients.len(), 1);
    }
}
