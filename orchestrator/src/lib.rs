//! Starts and stops replicas: local child processes (and later Kubernetes pods)
