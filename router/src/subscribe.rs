//! Follows the controller's routing table over the `WatchRoutingTable` stream and applies each
//! version to a router. On any error it keeps serving the last table and subscribes again with
//! jittered backoff, so a restarted controller is picked up.

use std::time::Duration;

use photon_proto::v1 as pb;

use crate::table::RoutingTable;
use crate::Router;

/// Runs until the task is dropped: subscribes to `controller` (a URL such as
/// `http://127.0.0.1:4567`) and applies every table to `router`.
pub async fn follow_controller(router: Router, controller: String, subscriber: String) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match watch_once(&router, &controller, &subscriber).await {
            Ok(()) => tracing::info!(%controller, "routing table stream ended; subscribing again"),
            Err(e) => tracing::debug!(%controller, error = %e, "routing table stream failed; subscribing again"),
        }
        let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn watch_once(
    router: &Router,
    controller: &str,
    subscriber: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = crate::cluster_auth::controller_client(controller).await?;
    let mut stream = client
        .watch_routing_table(pb::WatchRoutingTableRequest { subscriber: subscriber.to_string() })
        .await?
        .into_inner();
    while let Some(table) = stream.message().await? {
        router.apply(RoutingTable::try_from(table)?);
    }
    Ok(())
}
