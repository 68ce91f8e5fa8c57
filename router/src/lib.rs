//! Routing tables, per-deployment queues, replica choice and DeploymentHandle
