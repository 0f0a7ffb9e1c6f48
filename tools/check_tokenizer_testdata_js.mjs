// Optional independent cross-check of the tokenizer fixtures in model/testdata/tokenizer/
// (written by tools/make_tokenizer_testdata.py): encodes every case with transformers.js
// (a JavaScript implementation of Hugging Face `tokenizers` semantics) and compares the ids.
//
//   d=$(mktemp -d) && (cd $d && npm init -y >/dev/null && \
//     npm install --ignore-scripts --no-audit --no-fund @xenova/transformers@2.17.2)
//   XT=$d/node_modules/@xenova/transformers node tools/check_tokenizer_testdata_js.mjs
//
// transformers.js 2.17.2 reads neither [a, b] merges nor a Metaspace without
// add_prefix_space; both are adapted in memory below (the ids do not depend on it).
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const xt = process.env.XT;
if (!xt) { console.error('set XT to the @xenova/transformers package directory'); process.exit(2); }
const { PreTrainedTokenizer } = await import(pathToFileURL(path.join(xt, 'src', 'tokenizers.js')).href);
const base = process.argv[2] || 'model/testdata/tokenizer';
const read = (f) => JSON.parse(fs.readFileSync(path.join(base, f), 'utf8'));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

let bad = 0;
function check(dir, cases, key) {
  const tj = read(path.join(dir, 'tokenizer.json'));
  tj.model.merges = tj.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  if (tj.pre_tokenizer && tj.pre_tokenizer.type === 'Metaspace') tj.pre_tokenizer.add_prefix_space = true;
  const cfgFile = path.join(base, dir, 'tokenizer_config.json');
  const tok = new PreTrainedTokenizer(tj, fs.existsSync(cfgFile) ? read(path.join(dir, 'tokenizer_config.json')) : {});
  let agree = 0;
  for (const c of cases) {
    const ids = tok.encode(c.text, null, { add_special_tokens: false });
    if (same(ids, c[key])) { agree++; continue; }
    bad++;
    console.log(dir, 'MISMATCH', JSON.stringify(c.text), '\n  js ', JSON.stringify(ids), '\n  ref', JSON.stringify(c[key]));
  }
  console.log(`${dir}: ${agree}/${cases.length} agree`);
}

const sp = read('sp_cases.json').cases;
check('sp_legacy', sp, 'ids');
check('sp_metaspace', sp, 'metaspace_ids');
const bl = read('bytelevel_cases.json');
for (const style of ['gpt2', 'llama3', 'qwen2']) check(`bytelevel_${style}`, bl[style], 'ids');
process.exit(bad ? 1 : 0);
