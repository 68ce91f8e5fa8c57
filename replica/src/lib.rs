//! Replica runtime: the Deployment trait, the registry and the ReplicaService
