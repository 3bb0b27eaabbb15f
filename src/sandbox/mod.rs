//! Sandboxes: where an agent runs. The pod backend is the default; each
//! backend is keyed by the run, so creating a sandbox twice finds the first.

pub mod pod;
