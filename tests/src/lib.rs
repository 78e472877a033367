//! Test support for stackhive: fresh databases ([`db`]) and a cluster of real coordinator and
//! worker processes ([`cluster`]), and level-1 models of known quality ([`level2`]). The tests themselves live in `tests/tests/`.

pub mod cluster;
pub mod db;
pub mod level2;
