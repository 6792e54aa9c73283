//! Text → token ids → text.

pub mod char;

pub use self::char::CharTokenizer;
