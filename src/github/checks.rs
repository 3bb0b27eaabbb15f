//! Check runs (`checks: write`): a pull request's run in the pull request's
//! checks, created on its head commit and updated as the run goes.
//!
//! Each carries the run's uid as its `external_id`, so a check run created
//! by a controller that crashed before recording it is found on the commit
//! instead of created again. octocrab's typed check-run model has no
//! `external_id`, so these calls go through [`send`] with the documented
//! shapes.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Error, GitHub, send};
use crate::api::{CheckRunRef, CheckRunState};

/// The check's name in the pull request's checks.
pub const CHECK_NAME: &str = "smolpaws";

/// What a check run says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Its state.
    pub state: CheckRunState,
    /// The output's title: one line.
    pub title: String,
    /// The output's summary, Markdown.
    pub summary: String,
    /// Where "Details" leads: the run's comment in the thread.
    pub details_url: Option<String>,
    /// When the run began (RFC 3339).
    pub started_at: Option<String>,
    /// When the run ended (RFC 3339), for a completed one.
    pub completed_at: Option<String>,
}

impl CheckReport {
    /// The fields of a create or update body that say what the check shows.
    fn body(&self) -> Value {
        // GitHub's limit on an output's summary, in characters.
        const MAX_SUMMARY_CHARS: usize = 65_535;
        let (status, conclusion) = match self.state {
            CheckRunState::Queued => ("queued", None),
            CheckRunState::InProgress => ("in_progress", None),
            CheckRunState::Success => ("completed", Some("success")),
            CheckRunState::Failure => ("completed", Some("failure")),
            CheckRunState::TimedOut => ("completed", Some("timed_out")),
            CheckRunState::Cancelled => ("completed", Some("cancelled")),
        };
        let mut body = json!({
            "status": status,
            "output": {
                "title": self.title,
                "summary": super::reply::fit(&self.summary, MAX_SUMMARY_CHARS),
            },
        });
        let fields = [
            ("conclusion", conclusion.map(str::to_owned)),
            ("details_url", self.details_url.clone()),
            ("started_at", self.started_at.clone()),
            (
                "completed_at",
                self.completed_at.clone().filter(|_| conclusion.is_some()),
            ),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                body[key] = Value::String(value);
            }
        }
        body
    }
}

#[derive(Deserialize)]
struct CheckRun {
    id: i64,
    html_url: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
}

impl CheckRun {
    fn into_ref(self, state: CheckRunState) -> CheckRunRef {
        CheckRunRef {
            id: self.id,
            html_url: self.html_url.unwrap_or_default(),
            state,
        }
    }
}

impl GitHub {
    /// The check run this App made on `head_sha` of `repository` for the
    /// run whose uid is `external_id`, if an earlier attempt made it.
    async fn find_check_run(
        &self,
        installation: u64,
        repository: &str,
        head_sha: &str,
        external_id: &str,
    ) -> Result<Option<CheckRun>, Error> {
        #[derive(Deserialize)]
        struct Listing {
            check_runs: Vec<CheckRun>,
        }
        const PAGE: usize = 100;
        let client = self.installation(installation).await?;
        let action = format!("list the check runs of {repository}@{head_sha}");
        // Bounded: GitHub keeps at most 1000 check runs of one name in a
        // check suite.
        for page in 1..=10 {
            let url = format!(
                "/repos/{repository}/commits/{head_sha}/check-runs?check_name={CHECK_NAME}&app_id={}&filter=all&per_page={PAGE}&page={page}",
                self.app_id
            );
            let listing: Listing = send(&client, http::Method::GET, &url, None, &action).await?;
            let count = listing.check_runs.len();
            if let Some(found) = listing
                .check_runs
                .into_iter()
                .find(|c| c.external_id.as_deref() == Some(external_id))
            {
                return Ok(Some(found));
            }
            if count < PAGE {
                break;
            }
        }
        Ok(None)
    }

    /// The run's check run on `head_sha` of `repository`, showing `report`:
    /// the one an earlier attempt made, brought up to date, or a new one.
    pub async fn open_check_run(
        &self,
        installation: u64,
        repository: &str,
        head_sha: &str,
        external_id: &str,
        report: &CheckReport,
    ) -> Result<CheckRunRef, Error> {
        if let Some(found) = self
            .find_check_run(installation, repository, head_sha, external_id)
            .await?
        {
            self.update_check_run(installation, repository, found.id, report)
                .await?;
            return Ok(found.into_ref(report.state));
        }
        let mut body = report.body();
        body["name"] = json!(CHECK_NAME);
        body["head_sha"] = json!(head_sha);
        body["external_id"] = json!(external_id);
        let action = format!("create a check run on {repository}@{head_sha}");
        let created: CheckRun = send(
            &*self.installation(installation).await?,
            http::Method::POST,
            &format!("/repos/{repository}/check-runs"),
            Some(&body),
            &action,
        )
        .await?;
        Ok(created.into_ref(report.state))
    }

    /// Shows `report` on check run `id` of `repository`.
    pub async fn update_check_run(
        &self,
        installation: u64,
        repository: &str,
        id: i64,
        report: &CheckReport,
    ) -> Result<(), Error> {
        let action = format!("update check run {id} of {repository}");
        let _: Value = send(
            &*self.installation(installation).await?,
            http::Method::PATCH,
            &format!("/repos/{repository}/check-runs/{id}"),
            Some(&report.body()),
            &action,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: CheckRunState) -> CheckReport {
        CheckReport {
            state,
            title: "t".into(),
            summary: "s".into(),
            details_url: Some("https://github.com/o/r/issues/7#issuecomment-1".into()),
            started_at: Some("2026-11-28T22:00:00Z".into()),
            completed_at: Some("2026-11-28T22:05:00Z".into()),
        }
    }

    #[test]
    fn a_completed_check_carries_its_conclusion_and_end() {
        let body = report(CheckRunState::TimedOut).body();
        assert_eq!(body["status"], "completed");
        assert_eq!(body["conclusion"], "timed_out");
        assert_eq!(body["completed_at"], "2026-11-28T22:05:00Z");
        assert_eq!(body["output"], json!({ "title": "t", "summary": "s" }));
    }

    #[test]
    fn an_open_check_has_no_conclusion_nor_end() {
        let body = report(CheckRunState::InProgress).body();
        assert_eq!(body["status"], "in_progress");
        assert!(body.get("conclusion").is_none());
        assert!(body.get("completed_at").is_none());
        assert_eq!(body["started_at"], "2026-11-28T22:00:00Z");
    }
}
