//! Webhooks: the changes the store recorded become deliveries
//! ([`outbox`]), each a run of the built-in handler `webhook` that posts
//! one event's body ([`body`]) to its URL, signed ([`post`]).

pub(crate) mod body;
pub(crate) mod outbox;
pub(crate) mod post;
