// yuzu-onnx browser host: run a converted ISM model with onnxruntime-web (wasm backend, files in
// vendor/) on a pasted sequence and draw the first output as an alphabet x position heatmap.
// For tests: window.yuzuResult = {outputName: {dims, data}} and #status[data-status].
'use strict';

ort.env.wasm.wasmPaths = new URL('vendor/', location.href).href;
// threads need a cross-origin isolated page (COOP/COEP headers), which a plain static server lacks
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

const $ = (id) => document.getElementById(id);
const state = { session: null, meta: null };
window.yuzuLog = [];
const log = (msg) => { window.yuzuLog.push(msg); console.log(msg); };

function setStatus(status, text) {
  const el = $('status');
  el.dataset.status = status;
  el.textContent = text;
  log(`[${status}] ${text}`);
}

// ---- yuzu_onnx.* metadata --------------------------------------------------------------------
// onnxruntime-web does not expose a model's metadata_props, so ModelProto field 14 is read from the
// model bytes; a model without them is described by its JSON sidecar (ISM.onnx.json).
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
  const fields = (end, onBytes) => {
    while (pos < end) {
      const key = varint(end), field = Math.floor(key / 8), wt = key % 8;
      if (wt === 0) varint(end);
      else if (wt === 1) pos += 8;
      else if (wt === 5) pos += 4;
      else if (wt === 2) {
        const len = varint(end), stop = pos + len;
        onBytes(field, stop);
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

function normaliseMeta(m, source) {
  for (const k of ['input', 'layout', 'alphabet', 'seq_len']) {
    if (m[k] === undefined || m[k] === '') throw new Error(`model metadata has no '${k}' (is it converted by yuzu-onnx?)`);
  }
  if (m.format && !String(m.format).startsWith('ism/1')) throw new Error(`unsupported format '${m.format}' (this page reads ism/1)`);
  if (m.layout !== 'ncl' && m.layout !== 'nlc') throw new Error(`unknown layout '${m.layout}'`);
  const seqLen = Number(m.seq_len);
  let win = m.window ?? [0, seqLen];
  if (typeof win === 'string') win = win.split(':').map(Number);
  return {
    input: m.input, layout: m.layout, alphabet: String(m.alphabet).toUpperCase(), seqLen,
    window: [Number(win[0]), Number(win[1])], version: m.version ?? '?', source,
  };
}

async function loadModel(bytes, modelName, sidecarLoader) {
  setStatus('loading', `Loading ${modelName} ...`);
  state.session = null;
  $('run').disabled = true;
  try {
    const props = readMetadataProps(bytes);
    const yz = {};
    for (const [k, v] of Object.entries(props)) if (k.startsWith('yuzu_onnx.')) yz[k.slice(10)] = v;
    let meta;
    if (yz.format || yz.input) meta = normaliseMeta(yz, 'model metadata');
    else {
      const side = await sidecarLoader();
      if (!side) throw new Error(`${modelName} has no yuzu_onnx metadata and no ${modelName}.json sidecar was given`);
      meta = normaliseMeta(side, `${modelName}.json`);
    }
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    if (!session.inputNames.includes(meta.input)) throw new Error(`the model has no input '${meta.input}'`);
    Object.assign(state, { session, meta });
    $('model-info').textContent =
      `${modelName}: length ${meta.seqLen}, alphabet ${meta.alphabet}, layout ${meta.layout}, ` +
      `window ${meta.window[0]}:${meta.window[1]}, input '${meta.input}', outputs ${session.outputNames.join(', ')}\n` +
      `(described by the ${meta.source}; yuzu-onnx ${meta.version}; onnxruntime-web ${ort.env.versions?.web ?? ''} wasm)`;
    $('run').disabled = false;
    setStatus('ready', `Model loaded. Paste a sequence of length ${meta.seqLen} and press "Run ISM".`);
  } catch (e) {
    setStatus('error', `Could not load the model: ${e.message ?? e}`);
  }
}

$('model-file').addEventListener('change', async (ev) => {
  const files = [...ev.target.files];
  const model = files.find((f) => !f.name.endsWith('.json'));
  if (!model) return setStatus('error', 'Choose an .onnx model file.');
  const side = files.find((f) => f.name === model.name + '.json') || files.find((f) => f.name.endsWith('.json'));
  const bytes = new Uint8Array(await model.arrayBuffer());
  await loadModel(bytes, model.name, async () => (side ? JSON.parse(await side.text()) : null));
});

const urlModel = new URLSearchParams(location.search).get('model');
if (urlModel) {
  (async () => {
    try {
      const r = await fetch(urlModel);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const bytes = new Uint8Array(await r.arrayBuffer());
      await loadModel(bytes, urlModel.split('/').pop(), async () => {
        const s = await fetch(urlModel + '.json');
        return s.ok ? s.json() : null;
      });
    } catch (e) {
      setStatus('error', `Could not fetch ${urlModel}: ${e.message ?? e}`);
    }
  })();
}

// ---- sequence -> one-hot (same rules as the C++ and Node hosts) ---------------------------------
function letterTable(alphabet) {
  const t = new Map();
  [...alphabet].forEach((c, i) => t.set(c, i));
  const dna = alphabet === 'ACGT', rna = alphabet === 'ACGU';
  if (dna || rna) {
    for (const c of 'NRYSWKMBDHV') t.set(c, -1); // IUPAC ambiguity codes: all-zero column
    if (dna) t.set('U', t.get('T'));
    if (rna) t.set('T', t.get('U'));
  } else {
    for (const c of 'X*') if (!t.has(c)) t.set(c, -1);
  }
  for (const c of '-.') if (!t.has(c)) t.set(c, -1);
  return t;
}

function parsePasted(text) {
  const lines = text.split(/\r?\n/);
  const headers = lines.filter((l) => l.startsWith('>')).length;
  if (headers > 1) throw new Error('Paste a single sequence (found several FASTA records).');
  return lines.filter((l) => !l.startsWith('>') && !l.startsWith(';')).join('').replace(/\s+/g, '').toUpperCase();
}

$('run').addEventListener('click', async () => {
  const { session, meta } = state;
  if (!session) return setStatus('error', 'Load a model first.');
  window.yuzuResult = null;
  let seq;
  try {
    seq = parsePasted($('sequence').value);
    if (seq.length !== meta.seqLen) {
      throw new Error(`The sequence has length ${seq.length}; this model needs exactly ${meta.seqLen}.`);
    }
    const table = letterTable(meta.alphabet);
    for (let i = 0; i < seq.length; i++) {
      if (!table.has(seq[i])) throw new Error(`Letter '${seq[i]}' at position ${i + 1} is not in the alphabet ${meta.alphabet}.`);
    }
    setStatus('running', 'Running ISM ...');
    const A = meta.alphabet.length, L = meta.seqLen;
    const fixed = session.inputMetadata?.find?.((m) => m.name === meta.input)?.shape?.[0];
    const batch = typeof fixed === 'number' && fixed > 0 ? fixed : 1;
    const x = new Float32Array(batch * A * L);
    for (let i = 0; i < L; i++) {
      const a = table.get(seq[i]);
      if (a >= 0) x[meta.layout === 'ncl' ? a * L + i : i * A + a] = 1;
    }
    const dims = meta.layout === 'ncl' ? [batch, A, L] : [batch, L, A];
    const t0 = performance.now();
    const outs = await session.run({ [meta.input]: new ort.Tensor('float32', x, dims) });
    const ms = performance.now() - t0;
    const result = {};
    for (const name of session.outputNames) {
      const t = outs[name];
      const per = t.data.length / t.dims[0];
      result[name] = { dims: [1, ...t.dims.slice(1)], data: Array.from(t.data.subarray(0, per)) };
    }
    const first = session.outputNames[0];
    const how = drawHeatmap(result[first], meta, seq);
    window.yuzuResult = result;
    setStatus('done', `Done in ${ms.toFixed(1)} ms. Heatmap of '${first}' ${JSON.stringify(result[first].dims)}${how}.`);
  } catch (e) {
    setStatus('error', e.message ?? String(e));
  }
});

// ---- heatmap -------------------------------------------------------------------------------------
// Rows: alphabet, columns: positions of the window. Other axes (besides the batch) are reduced by
// the l2 norm. The axes are found by their sizes (A and the window length), in layout order.
function heatmapMatrix(out, meta) {
  const d = out.dims.slice(1);
  const A = meta.alphabet.length, W = meta.window[1] - meta.window[0];
  const find = (size, not) => d.findIndex((n, i) => n === size && i !== not);
  let a, p;
  if (meta.layout === 'ncl') { a = find(A, -1); p = find(W, a); if (p < 0) p = find(meta.seqLen, a); }
  else { p = find(W, -1); if (p < 0) p = find(meta.seqLen, -1); a = find(A, p); }
  let note = '';
  if (a < 0 || p < 0) { a = 0; p = Math.min(1, d.length - 1); note = ' (alphabet/position axes not recognised: axes 1 and 2 shown)'; }
  const strides = d.map((_, i) => d.slice(i + 1).reduce((x, y) => x * y, 1));
  const rows = d[a], cols = p === a ? 1 : d[p];
  const extra = d.length > 2 || (d.length === 2 && p === a);
  const acc = new Float64Array(rows * cols);
  for (let flat = 0; flat < out.data.length; flat++) {
    const r = Math.floor(flat / strides[a]) % d[a];
    const c = p === a ? 0 : Math.floor(flat / strides[p]) % d[p];
    const v = out.data[flat];
    acc[r * cols + c] += extra ? v * v : v;
  }
  if (extra) for (let i = 0; i < acc.length; i++) acc[i] = Math.sqrt(acc[i]);
  return { rows, cols, values: acc, note: extra ? `${note}, l2 norm over the other axes` : note };
}

function colour(v, vmax) {
  const t = vmax > 0 ? Math.max(-1, Math.min(1, v / vmax)) : 0;
  const mix = (c) => Math.round(255 + (c - 255) * Math.abs(t));
  return t >= 0 ? `rgb(${mix(178)},${mix(24)},${mix(43)})` : `rgb(${mix(33)},${mix(102)},${mix(172)})`;
}

function drawHeatmap(out, meta, seq) {
  const { rows, cols, values, note } = heatmapMatrix(out, meta);
  const vmax = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const cw = Math.max(3, Math.min(24, Math.floor(900 / cols))), ch = 22, left = 24, top = 8;
  const cv = $('heatmap');
  cv.width = left + cols * cw + 90;
  cv.height = top + rows * ch + 40;
  const g = cv.getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, cv.width, cv.height);
  g.font = '12px monospace';
  g.textBaseline = 'middle';
  for (let r = 0; r < rows; r++) {
    g.fillStyle = '#222';
    g.fillText(meta.alphabet[r] ?? String(r), 6, top + r * ch + ch / 2);
    for (let c = 0; c < cols; c++) {
      g.fillStyle = colour(values[r * cols + c], vmax);
      g.fillRect(left + c * cw, top + r * ch, cw, ch);
    }
  }
  // the reference letter of each position (when rows are the alphabet and columns the window)
  if (rows === meta.alphabet.length && cols === meta.window[1] - meta.window[0]) {
    g.fillStyle = '#000';
    for (let c = 0; c < cols; c++) {
      const r = meta.alphabet.indexOf(seq[meta.window[0] + c] === 'U' && meta.alphabet === 'ACGT' ? 'T' : seq[meta.window[0] + c]);
      if (r >= 0) g.fillRect(left + c * cw + cw / 2 - 1.5, top + r * ch + ch / 2 - 1.5, 3, 3);
    }
  }
  g.fillStyle = '#222';
  g.textBaseline = 'top';
  const step = Math.max(1, Math.ceil(cols / 10));
  for (let c = 0; c < cols; c += step) g.fillText(String(meta.window[0] + c + 1), left + c * cw, top + rows * ch + 4);
  // colour bar
  const bx = left + cols * cw + 16, bh = rows * ch;
  for (let y = 0; y < bh; y++) {
    g.fillStyle = colour(vmax * (1 - (2 * y) / bh), vmax);
    g.fillRect(bx, top + y, 14, 1);
  }
  g.fillStyle = '#222';
  g.fillText(vmax.toPrecision(3), bx + 18, top);
  g.fillText('0', bx + 18, top + bh / 2 - 6);
  g.fillText((-vmax).toPrecision(3), bx + 18, top + bh - 12);
  return note;
}
