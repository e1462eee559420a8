//! stsguard: a Kubernetes admission webhook that enforces StatefulSet best practices.
#![forbid(unsafe_code)]

pub mod admit;
pub mod audit;
pub mod backstop;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod evaluate;
pub mod exemption;
pub mod leader;
pub mod lookup;
pub mod managed_tls;
pub mod manifest;
pub mod metrics;
pub mod mutate;
pub mod object_read;
pub mod parallel;
pub mod periodic;
pub mod policy;
pub mod policy_reload;
pub mod registration;
pub mod report;
pub mod reports;
pub mod review;
pub mod rules;
pub mod server;
pub mod subject;
pub mod telemetry;
pub mod time;
pub mod tls;
