//! What both listeners share about HTTP messages: the response [`Body`], the one set of
//! response builders ([`respond`]), reading a request body under limits ([`read`]), and the
//! one map from a failure the data path answers itself to its status ([`failure`]).

mod body;
pub mod failure;
pub mod read;
pub mod respond;

pub use body::{full, Body, BoxError};
pub use failure::Failure;
