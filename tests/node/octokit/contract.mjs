// Drives every GitHub route smolpaws uses through the official client
// (@octokit/rest, with @octokit/auth-app minting the App's JWT and its
// installation tokens) against the API at GITHUB_API_URL, and checks the
// fields a client of each answer reads. Prints "contract kept" when all hold.
//
//   node contract.mjs PACKAGES_DIR KEY_FILE [forbidden]
//
// PACKAGES_DIR holds node_modules (tests/node/env.sh); KEY_FILE is the
// App's PEM key. The fake has pull request 7 of octo/hello seeded, its head
// `feature` at HEAD_SHA. With `forbidden`, the App lacks `checks: write`,
// and the check-run calls must fail as GitHub fails them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [dir, keyFile, mode] = process.argv.slice(2);
const resolve = createRequire(join(dir, "contract.js")).resolve;
const { Octokit } = await import(pathToFileURL(resolve("@octokit/rest")));
const { createAppAuth } = await import(pathToFileURL(resolve("@octokit/auth-app")));

const baseUrl = process.env.GITHUB_API_URL;
const headSha = process.env.HEAD_SHA;
const botUserId = Number(process.env.BOT_USER_ID);
const privateKey = readFileSync(keyFile, "utf8");
const owner = "octo";
const repo = "hello";

// The App itself, with its JWT.
const app = new Octokit({ baseUrl, authStrategy: createAppAuth, auth: { appId: 1, privateKey } });
const { data: me } = await app.rest.apps.getAuthenticated();
assert.equal(me.id, 1);
assert.equal(me.slug, "smolpaws");
const { data: installation } = await app.rest.apps.getRepoInstallation({ owner, repo });
assert.equal(installation.id, 1);

// A token for one repository with chosen permissions, as a run's.
const { status: minted, data: scoped } = await app.rest.apps.createInstallationAccessToken({
  installation_id: installation.id,
  repositories: [repo],
  permissions: { contents: "read", issues: "read", pull_requests: "read", metadata: "read" },
});
assert.equal(minted, 201);
assert.match(scoped.token, /^ghs_/);
assert.ok(new Date(scoped.expires_at) > new Date(), `expires_at ${scoped.expires_at}`);
assert.equal(scoped.permissions.contents, "read");

// The installation, its token minted and cached by auth-app.
const octokit = new Octokit({
  baseUrl,
  authStrategy: createAppAuth,
  auth: { appId: 1, privateKey, installationId: installation.id },
});

const { data: bot } = await octokit.rest.users.getByUsername({ username: `${me.slug}[bot]` });
assert.equal(bot.id, botUserId);
assert.equal(bot.login, "smolpaws[bot]");
assert.equal(bot.type, "Bot");

const { data: issue } = await octokit.rest.issues.get({ owner, repo, issue_number: 7 });
assert.equal(issue.number, 7);
assert.equal(typeof issue.title, "string");
assert.equal(issue.user.login, owner);

const { data: eyes } = await octokit.rest.reactions.createForIssueComment({
  owner, repo, comment_id: 4242, content: "eyes",
});
assert.equal(eyes.content, "eyes");
const { data: reviewEyes } = await octokit.rest.reactions.createForPullRequestReviewComment({
  owner, repo, comment_id: 909, content: "eyes",
});
assert.equal(reviewEyes.content, "eyes");

const since = new Date(Date.now() - 60_000).toISOString();
const { status: posted, data: comment } = await octokit.rest.issues.createComment({
  owner, repo, issue_number: 7, body: "⏳ working\n\n<!-- smolpaws:progress -->",
});
assert.equal(posted, 201);
assert.equal(typeof comment.id, "number");
assert.match(comment.html_url, /\/issues\/7#issuecomment-\d+$/);
assert.equal(comment.user.type, "Bot");
assert.equal(comment.performed_via_github_app.id, 1);
const { data: edited } = await octokit.rest.issues.updateComment({
  owner, repo, comment_id: comment.id, body: "✅ done\n\n<!-- smolpaws:progress -->",
});
assert.equal(edited.id, comment.id);
assert.match(edited.body, /^✅ done/);
const { data: listed } = await octokit.rest.issues.listComments({
  owner, repo, issue_number: 7, since, per_page: 100, page: 1,
});
assert.deepEqual(listed.map((c) => [c.id, c.body]), [[comment.id, edited.body]]);

const { data: pull } = await octokit.rest.pulls.get({ owner, repo, pull_number: 7 });
assert.equal(pull.number, 7);
assert.equal(pull.head.ref, "feature");
assert.equal(pull.head.sha, headSha);
assert.equal(pull.head.repo.full_name, `${owner}/${repo}`);
assert.equal(pull.base.ref, "main");

const { data: reply } = await octokit.rest.pulls.createReplyForReviewComment({
  owner, repo, pull_number: 7, comment_id: 909, body: "Fixed it.",
});
assert.equal(reply.in_reply_to_id, 909);
assert.match(reply.html_url, /\/pull\/7#discussion_r\d+$/);
const { data: thread } = await octokit.rest.pulls.listReviewComments({
  owner, repo, pull_number: 7, since, per_page: 100, page: 1,
});
assert.deepEqual(thread.map((c) => c.id), [reply.id]);

const { status: opened, data: draft } = await octokit.rest.pulls.create({
  owner, repo, title: "Fix the README", head: "smolpaws/7-abc", base: "main",
  body: "Asked for in #7.", draft: true,
});
assert.equal(opened, 201);
assert.equal(draft.draft, true);
assert.equal(draft.head.ref, "smolpaws/7-abc");
const { data: found } = await octokit.rest.pulls.list({
  owner, repo, head: `${owner}:smolpaws/7-abc`, state: "all",
});
assert.deepEqual(found.map((p) => p.number), [draft.number]);
await assert.rejects(
  octokit.rest.pulls.create({ owner, repo, title: "again", head: "smolpaws/7-abc", base: "main" }),
  (error) => error.status === 422,
);

const output = { title: "Waiting for a sandbox", summary: "smolpaws took the request." };
if (mode === "forbidden") {
  for (const call of [
    () => octokit.rest.checks.create({ owner, repo, name: "smolpaws", head_sha: headSha, status: "queued", output }),
    () => octokit.rest.checks.listForRef({ owner, repo, ref: headSha, check_name: "smolpaws", filter: "all" }),
  ]) {
    await assert.rejects(call(), (error) => {
      assert.equal(error.status, 403);
      assert.match(error.message, /Resource not accessible by integration/);
      return true;
    });
  }
} else {
  const { status: created, data: check } = await octokit.rest.checks.create({
    owner, repo, name: "smolpaws", head_sha: headSha, external_id: "run-uid", status: "queued", output,
  });
  assert.equal(created, 201);
  assert.equal(check.status, "queued");
  assert.equal(check.conclusion, null);
  assert.equal(check.head_sha, headSha);
  assert.equal(check.external_id, "run-uid");
  assert.equal(check.app.id, 1);
  assert.equal(check.output.title, output.title);
  const { data: completed } = await octokit.rest.checks.update({
    owner, repo, check_run_id: check.id, status: "completed", conclusion: "success",
    completed_at: new Date().toISOString(), output: { title: "Replied", summary: "[The reply](x)" },
  });
  assert.equal(completed.status, "completed");
  assert.equal(completed.conclusion, "success");
  assert.equal(completed.output.summary, "[The reply](x)");
  const { data: onHead } = await octokit.rest.checks.listForRef({
    owner, repo, ref: headSha, check_name: "smolpaws", app_id: 1, filter: "all", per_page: 100,
  });
  assert.equal(onHead.total_count, 1);
  assert.deepEqual(onHead.check_runs.map((c) => [c.id, c.external_id, c.conclusion]), [
    [check.id, "run-uid", "success"],
  ]);
}

// A run's token revokes itself.
const holder = new Octokit({ baseUrl, auth: scoped.token });
const { status: revoked } = await holder.rest.apps.revokeInstallationAccessToken();
assert.equal(revoked, 204);
await assert.rejects(holder.rest.apps.revokeInstallationAccessToken(), (error) => error.status === 401);

console.log("contract kept");
