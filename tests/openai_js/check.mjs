// The official `openai` npm client against `kvspan serve --http-listen` (run by
// tests/serve_openai_test.cc): streams a completion and a chat completion, checks text and
// usage, a repeated prompt's cached_tokens, and that n=2 surfaces as BadRequestError.
// Usage: node check.mjs http://HOST:PORT CHAT_PROMPT_TOKENS
// Prints one line per check; exit 0 when every check passed, 1 otherwise.
import OpenAI from 'openai';

const [root, chatPromptTokens] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${root}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
const model = (await client.models.list()).data[0].id;
let failed = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok' : 'FAILED'}: ${what}`);
  if (!ok) failed++;
}

// ~150 token ids: two full spans of 64 the store keeps, and a tail.
const prompt = Array.from({ length: 150 }, (_, i) => 3 + ((i * 7919) % 4000));
async function streamCompletion() {
  const stream = await client.completions.create({
    model, prompt, max_tokens: 8, temperature: 0, ignore_eos: true, user: 'openai-js',
    stream: true, stream_options: { include_usage: true },
  });
  let text = '', usage = null, finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.text;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return { text, usage, finish };
}

// Spans reach the store asynchronously: the node's /metrics says when they are there.
async function storePutsOk() {
  const text = await (await fetch(`${root}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('kvspan:store_puts_total{result="ok"} '));
  return line ? Number(line.split(' ')[1]) : 0;
}
async function waitForStorePuts(target) {
  for (let i = 0; i < 300 && (await storePutsOk()) < target; i++) await new Promise((r) => setTimeout(r, 100));
}

const putsBefore = await storePutsOk();
const cold = await streamCompletion();
check(cold.text.length > 0, `completion text ${JSON.stringify(cold.text)}`);
check(cold.finish === 'length', `completion finish_reason ${cold.finish}`);
check(cold.usage?.prompt_tokens === 150 && cold.usage?.completion_tokens === 8 && cold.usage?.total_tokens === 158,
      `completion usage ${JSON.stringify(cold.usage)}`);
await waitForStorePuts(putsBefore + 2);  // the prompt's two full spans
const warm = await streamCompletion();
check(warm.usage?.prompt_tokens_details?.cached_tokens >= 128,
      `repeated prompt cached_tokens ${warm.usage?.prompt_tokens_details?.cached_tokens} >= 128`);
check(warm.text === cold.text, 'greedy repeat gives the same text');

const chat = await client.chat.completions.create({
  model, messages: [{ role: 'user', content: 'The jury said' }], max_completion_tokens: 6, temperature: 0,
  ignore_eos: true, stream: true, stream_options: { include_usage: true },
});
let content = '', role = null, usage = null;
for await (const chunk of chat) {
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    if (choice.delta.role) role = choice.delta.role;
    content += choice.delta.content ?? '';
  }
}
check(content.length > 0 && role === 'assistant', `chat content ${JSON.stringify(content)}, role ${role}`);
check(usage?.prompt_tokens === Number(chatPromptTokens) && usage?.completion_tokens === 6,
      `chat usage ${JSON.stringify(usage)} (prompt_tokens ${chatPromptTokens} expected)`);

try {
  await client.completions.create({ model, prompt: 'x', n: 2 });
  check(false, 'n=2 was accepted');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.status === 400, `n=2: ${e.constructor.name} ${e.status} ${e.message}`);
}

console.log(failed === 0 ? 'all checks passed' : `${failed} checks failed`);
process.exit(failed === 0 ? 0 : 1);
