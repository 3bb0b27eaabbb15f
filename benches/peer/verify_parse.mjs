// The Node peer of benches/intake_delivery.rs: @octokit/webhooks `verify`
// and `JSON.parse` on the same signed body, timed as the Rust side times
// itself (the median of batches after a warm-up). Prints one JSON line.
//
//   node verify_parse.mjs PEER_DIR BODY_FILE SECRET SIGNATURE
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [dir, bodyFile, secret, signature] = process.argv.slice(2);
const resolve = createRequire(join(dir, "peer.js")).resolve;
const { Webhooks } = await import(pathToFileURL(resolve("@octokit/webhooks")));
const webhooks = new Webhooks({ secret });
// The worker received the body as text, as its framework decoded it.
const text = readFileSync(bodyFile, "utf8");

async function median(step, batch = 2000, batches = 21) {
  for (let i = 0; i < batch; i++) await step();
  const perOp = [];
  for (let b = 0; b < batches; b++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) await step();
    perOp.push(Number(process.hrtime.bigint() - start) / batch);
  }
  perOp.sort((a, b) => a - b);
  return perOp[perOp.length >> 1];
}

if (!(await webhooks.verify(text, signature))) throw new Error("the peer refused the signature");
const verify = await median(() => webhooks.verify(text, signature));
const verifyParse = await median(async () => {
  if (!(await webhooks.verify(text, signature))) throw new Error("refused");
  return JSON.parse(text);
});
console.log(JSON.stringify({ node: process.version, verify_ns: verify, verify_parse_ns: verifyParse }));
