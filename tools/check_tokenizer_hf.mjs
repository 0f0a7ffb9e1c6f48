// Optional independent cross-check of the exported tokenizer: encodes every tokenizer fixture
// with transformers.js (a JavaScript implementation of Hugging Face `tokenizers` semantics,
// loading our tokenizer.json) and compares with reference/tokenizer_fixtures.json.
//
//   d=$(mktemp -d) && (cd $d && npm init -y >/dev/null && \
//     npm install --ignore-scripts --no-audit --no-fund @xenova/transformers@2.17.2)
//   XT=$d/node_modules/@xenova/transformers node tools/check_tokenizer_hf.mjs models/kvspan-brown
//
// (Only src/tokenizers.js is imported, so the native image/onnx dependencies are not needed.)
// Note: tokenizer.json has post_processor null, so transformers.js (like HF's
// PreTrainedTokenizerFast) does not add <|bos|> itself; prompts are compared after prepending it.
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const xt = process.env.XT;
if (!xt) { console.error('set XT to the @xenova/transformers package directory'); process.exit(2); }
const { PreTrainedTokenizer } = await import(pathToFileURL(path.join(xt, 'src', 'tokenizers.js')).href);
const dir = process.argv[2] || 'models/kvspan-brown';
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
const tok = new PreTrainedTokenizer(read('tokenizer.json'), read('tokenizer_config.json'));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
let bad = 0;
const fx = read('reference/tokenizer_fixtures.json');
for (const c of fx.cases) {
  const ids = tok.encode(c.text, null, { add_special_tokens: false });
  if (!same(ids, c.ids)) { bad++; console.log('MISMATCH', JSON.stringify(c.text), '\n  hf ', JSON.stringify(ids), '\n  ref', JSON.stringify(c.ids)); }
  const text = c.ids.length === 0 ? '' : tok.decode(c.ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  if (text !== c.text) { bad++; console.log('DECODE MISMATCH', JSON.stringify(c.text), JSON.stringify(text)); }
}
const pj = read('reference/prompts.json');
for (const p of pj.prompts) {
  const ids = [pj.bos_token_id, ...tok.encode(p.text, null, { add_special_tokens: false })];
  if (!same(ids, p.ids)) { bad++; console.log('PROMPT MISMATCH', JSON.stringify(p.text), JSON.stringify(ids), JSON.stringify(p.ids)); }
}
console.log(`transformers.js: ${fx.cases.length} fixtures + ${pj.prompts.length} prompts, ${bad} mismatches`);
process.exit(bad ? 1 : 0);
