//! Test support for stackhive: fresh databases ([`db`]) and a cluster of real coordinator and
//! worker processes ([`cluster`]). The tests themselves live in `tests/tests/`.

pub mod cluster;
pub mod db;
