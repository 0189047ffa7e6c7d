#!/usr/bin/env node
// Run a yuzu-onnx ISM model on the sequences of a FASTA file with onnxruntime-node (CPU).
//
//   node run.mjs ISM.onnx INPUT.fa OUTDIR
//
// Same behaviour as examples/cpp: the yuzu_onnx.* metadata (read from the model file; the JS API
// does not expose custom metadata; ISM.onnx.json is used when the model has none) gives the input,
// layout, alphabet and length; every record is one-hot encoded (case-insensitive; for DNA/RNA the
// IUPAC codes such as N give a zero column, U is read as T), all records run as one batch and each
// output is written to OUTDIR/<output name>.npy (float32, C order, first axis = record).
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';

class UsageError extends Error {}

// ---- yuzu_onnx.* metadata: ModelProto.metadata_props (field 14) read straight from the bytes
function readMetadataProps(buf) {
  const props = {};
  const dec = new TextDecoder();
  let pos = 0;
  const varint = (end) => {
    let v = 0, mul = 1;
    for (;;) {
      if (pos >= end) throw new Error('truncated ONNX protobuf');
      const b = buf[pos++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
  };
  const fields = (end, onString) => {
    while (pos < end) {
      const key = varint(end), field = Math.floor(key / 8), wt = key % 8;
      if (wt === 0) varint(end);
      else if (wt === 1) pos += 8;
      else if (wt === 5) pos += 4;
      else if (wt === 2) {
        const len = varint(end), stop = pos + len;
        onString(field, stop);
        pos = stop;
      } else throw new Error(`not an ONNX model (protobuf wire type ${wt})`);
    }
  };
  fields(buf.length, (field, stop) => {
    if (field !== 14) return;
    const kv = {};
    fields(stop, (f, s) => { if (f === 1 || f === 2) kv[f] = dec.decode(buf.subarray(pos, s)); });
    if (kv[1] !== undefined) props[kv[1]] = kv[2] ?? '';
  });
  return props;
}

function readMeta(modelPath) {
  const props = readMetadataProps(fs.readFileSync(modelPath));
  const m = {};
  for (const [k, v] of Object.entries(props)) if (k.startsWith('yuzu_onnx.')) m[k.slice(10)] = v;
  if (!m.format && fs.existsSync(modelPath + '.json')) {
    const side = JSON.parse(fs.readFileSync(modelPath + '.json', 'utf8'));
    Object.assign(m, side, {
      format: side.format ?? 'ism/1',
      window: Array.isArray(side.window) ? side.window.join(':') : side.window,
    });
  }
  for (const k of ['format', 'input', 'layout', 'alphabet', 'seq_len']) {
    if (m[k] === undefined || m[k] === '')
      throw new UsageError(`model has no 'yuzu_onnx.${k}' metadata: is it a model converted by yuzu-onnx?`);
  }
  if (!String(m.format).startsWith('ism/1')) throw new UsageError(`unsupported yuzu_onnx.format '${m.format}' (this host reads ism/1)`);
  if (m.layout !== 'ncl' && m.layout !== 'nlc') throw new UsageError(`unknown yuzu_onnx.layout '${m.layout}' (expected ncl or nlc)`);
  m.seq_len = Number(m.seq_len);
  m.alphabet = String(m.alphabet).toUpperCase();
  return m;
}

// ---- FASTA and one-hot
function readFasta(file) {
  const recs = [];
  fs.readFileSync(file, 'utf8').split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (!line || line[0] === ';') return;
    if (line[0] === '>') {
      recs.push({ name: line.slice(1).trim().split(/\s+/)[0] || `record${recs.length + 1}`, seq: '' });
    } else {
      if (!recs.length) throw new UsageError(`${file}:${i + 1}: sequence data before the first '>' header (not a FASTA file?)`);
      recs[recs.length - 1].seq += line.replace(/\s+/g, '');
    }
  });
  if (!recs.length) throw new UsageError(`no FASTA records in ${file}`);
  return recs;
}

// letter -> row of the one-hot (>= 0), -1 for an all-zero column; absent: invalid
function letterTable(alphabet) {
  const t = new Map();
  [...alphabet].forEach((c, i) => t.set(c, i));
  const dna = alphabet === 'ACGT', rna = alphabet === 'ACGU';
  if (dna || rna) {
    for (const c of 'NRYSWKMBDHV') t.set(c, -1);
    if (dna) t.set('U', t.get('T'));
    if (rna) t.set('T', t.get('U'));
  } else {
    for (const c of 'X*') if (!t.has(c)) t.set(c, -1);
  }
  for (const c of '-.') if (!t.has(c)) t.set(c, -1);
  return t;
}

function npy(dims, data) {
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims.join(', ')}${dims.length === 1 ? ',' : ''}), }`;
  const total = 10 + dict.length + 1;
  dict += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(head);
  head.writeUInt16LE(dict.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength); // x86/arm: little-endian
  return Buffer.concat([head, Buffer.from(dict, 'latin1'), body]);
}

async function main(argv) {
  if (argv.length !== 3) throw new UsageError('usage: node run.mjs ISM.onnx INPUT.fa OUTDIR');
  const [modelPath, fastaPath, outdir] = argv;
  const m = readMeta(modelPath);
  const session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'] });
  if (session.inputNames.length !== 1) throw new UsageError(`expected a model with one input, got ${session.inputNames.length}`);
  if (session.inputNames[0] !== m.input) throw new UsageError(`metadata names input '${m.input}' but the model's input is '${session.inputNames[0]}'`);
  console.log(`onnxruntime-node ${ort.env.versions?.node ?? '?'} (onnxruntime-common ${ort.env.versions?.common ?? '?'})`);
  console.log('execution provider: cpu (CPUExecutionProvider)');
  console.log(`model: ${modelPath} [yuzu-onnx ${m.version ?? '?'}, ${m.format}] input '${m.input}' layout ${m.layout}, alphabet ${m.alphabet}, length ${m.seq_len}, window ${m.window}`);

  const recs = readFasta(fastaPath);
  const table = letterTable(m.alphabet);
  const A = m.alphabet.length, L = m.seq_len, n = recs.length;
  for (const r of recs) {
    if (r.seq.length !== L) throw new UsageError(`sequence '${r.name}' has length ${r.seq.length}; the model needs exactly ${L}`);
    const s = r.seq.toUpperCase();
    for (let i = 0; i < L; i++) {
      if (!table.has(s[i])) throw new UsageError(`sequence '${r.name}' has the letter '${r.seq[i]}' at position ${i + 1}, not in alphabet ${m.alphabet}`);
    }
  }
  const fixed = session.inputMetadata?.[0]?.shape?.[0];
  const chunk = typeof fixed === 'number' && fixed > 0 ? fixed : n;
  console.log(`sequences: ${n} from ${fastaPath} (batch ${chunk})`);

  const results = Object.fromEntries(session.outputNames.map((k) => [k, { dims: null, parts: [] }]));
  for (let start = 0; start < n; start += chunk) {
    const x = new Float32Array(chunk * A * L);
    for (let b = 0; b < chunk && start + b < n; b++) {
      const s = recs[start + b].seq.toUpperCase();
      for (let i = 0; i < L; i++) {
        const a = table.get(s[i]);
        if (a >= 0) x[m.layout === 'ncl' ? (b * A + a) * L + i : (b * L + i) * A + a] = 1;
      }
    }
    const dims = m.layout === 'ncl' ? [chunk, A, L] : [chunk, L, A];
    const outs = await session.run({ [m.input]: new ort.Tensor('float32', x, dims) });
    const keep = Math.min(chunk, n - start);
    for (const name of session.outputNames) {
      const t = outs[name];
      if (t.type !== 'float32') throw new UsageError(`output '${name}' is not float32`);
      if (t.dims[0] !== chunk) throw new UsageError(`output '${name}' has no batch axis of size ${chunk}`);
      const per = t.data.length / chunk;
      results[name].parts.push(t.data.subarray(0, per * keep));
      results[name].dims = [n, ...t.dims.slice(1)];
    }
  }
  await session.release?.();

  fs.mkdirSync(outdir, { recursive: true });
  for (const [name, r] of Object.entries(results)) {
    const data = new Float32Array(r.parts.reduce((s, p) => s + p.length, 0));
    let off = 0;
    for (const p of r.parts) { data.set(p, off); off += p.length; }
    const file = path.join(outdir, `${name}.npy`);
    fs.writeFileSync(file, npy(r.dims, data));
    console.log(`wrote ${file} shape (${r.dims.join(', ')})`);
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`error: ${e instanceof UsageError ? e.message : e?.message ?? e}`);
  process.exit(e instanceof UsageError && e.message.startsWith('usage') ? 2 : 1);
});
