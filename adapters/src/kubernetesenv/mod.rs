//! `kubernetesenv`: generates workload attributes from the Kubernetes API.

pub mod config;
