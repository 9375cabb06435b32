#![no_std]
// This library target exists so that the agent can name this crate as a build-dependency, which
// makes cargo rebuild the agent (and so re-run the eBPF build) when these programs change.
