//! The Rust code generated from tracer/proto into tracer/src/generated/ (`cargo xtask codegen`;
//! `cargo xtask lint` checks that it is current): the CRI's `runtime.v1` and containerd's event
//! service.

#![allow(
    clippy::all,
    clippy::pedantic,
    dead_code,
    missing_docs,
    unreachable_pub
)]

/// Kubernetes' Container Runtime Interface.
pub mod runtime {
    pub mod v1 {
        include!("../../generated/runtime.v1.rs");
    }
}

/// containerd's own API: its event service and the events it publishes.
pub mod containerd {
    pub mod events {
        include!("../../generated/containerd.events.rs");
    }
    pub mod services {
        pub mod events {
            pub mod v1 {
                include!("../../generated/containerd.services.events.v1.rs");
            }
        }
    }
}

pub mod google {
    pub mod protobuf {
        include!("../../generated/google.protobuf.rs");
    }
}
