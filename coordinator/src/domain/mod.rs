//! The scheduler's domain, free of transport and storage: jobs, states, records and the fence
//! (`model`), the job kinds and their payload checks (`kinds`), and the validation of what
//! clients and workers send (`validate`), each rule once.

pub mod kinds;
pub mod model;
pub mod validate;
