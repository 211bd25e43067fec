//! Test support shared by integration tests that talk to Kubernetes: `apiserver`, a
//! wire-compatible test API server used through the real `kube` client, and `reflect`, a kube-rs
//! reflector harness with bounded "converges to" waits.
// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

pub mod apiserver;
pub mod reflect;
