//! The App's bot identity, which the agent's commits are by: its slug from
//! `GET /app`, its bot user's id from `GET /users/<slug>[bot]`. Both are
//! the App's for as long as it exists, so they are read once per process.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::{Error, GitHub, send};
use crate::api::contract::CommitAuthor;

impl GitHub {
    /// The App's bot identity, if it was read already.
    pub fn known_identity(&self) -> Option<CommitAuthor> {
        self.identity.get().cloned()
    }

    /// The App's bot identity, read through `installation` the first time
    /// (GitHub answers `/users` to an installation, not to the App's JWT)
    /// and kept after.
    pub async fn bot_identity(&self, installation: u64) -> Result<CommitAuthor, Error> {
        #[derive(Deserialize)]
        struct App {
            slug: String,
        }
        #[derive(Deserialize)]
        struct User {
            id: u64,
        }
        self.identity
            .get_or_try_init(|| async {
                let app: App =
                    send(&self.app, http::Method::GET, "/app", None, "read the App").await?;
                let login = format!("{}[bot]", app.slug);
                let action = format!("read the App's bot user {login}");
                let user: User = send(
                    &*self.installation(installation).await?,
                    http::Method::GET,
                    &format!("/users/{}", utf8_percent_encode(&login, NON_ALPHANUMERIC)),
                    None,
                    &action,
                )
                .await?;
                Ok(CommitAuthor::bot(&app.slug, user.id))
            })
            .await
            .cloned()
    }
}
