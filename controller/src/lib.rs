//! Controller: target state, reconcile loop, health checks, routing table publication
