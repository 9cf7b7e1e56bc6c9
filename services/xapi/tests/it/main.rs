//! The validation corpus: hundreds of valid and invalid statements, each checked for the
//! verdict and for the place the first violation names.

mod corpus;
mod never_panics;
