// Browser client of a stereodeploy matcher file: decode two images to RGBA, run the file with onnxruntime-web
// (wasm; threads when the page is cross-origin isolated), show the disparity in colour with a colour bar.
import * as ort from '/ort/ort.wasm.min.mjs';

ort.env.wasm.wasmPaths = '/ort/';
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

const $ = (id) => document.getElementById(id);
const state = { session: null, maxDisp: null, meta: null, left: null, right: null, result: null };
const WASM_BYTES = 4 * 2 ** 30; // 32-bit WebAssembly addresses 4 GiB: onnxruntime-web's whole heap

function status(text) {
  $('status').textContent = text;
}

/** An image file -> {data: Uint8Array RGBA, height, width, channels: 4}, colours as stored (no colour management). */
async function decode(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const pixels = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return { data: new Uint8Array(pixels.buffer), height: bitmap.height, width: bitmap.width, channels: 4 };
}

async function loadModel(source, sidecar) {
  // no memory arena: it would keep every block size it ever held, and wasm stops at 4 GB
  state.session = await ort.InferenceSession.create(source, { executionProviders: ['wasm'], enableCpuMemArena: false });
  state.maxDisp = null;
  state.meta = null;
  if (sidecar) { // <model>.onnx.json, written by `stereodeploy export-matcher`: the JS API cannot read metadata
    try {
      const meta = (await (await fetch(sidecar)).json()).metadata;
      state.maxDisp = Number(meta['stereodeploy.max_disp']);
      state.meta = meta;
    } catch (err) { /* no sidecar: scale the colours by the result */ }
  }
}

/** Bytes the file needs at its peak for a height x width pair, by the sidecar's memory model (0 without one). */
function peakBytes(meta, height, width) {
  if (!meta || !('stereodeploy.matcher.peak_bytes_fixed' in meta)) return 0;
  const bytes = (name) => Number(meta[`stereodeploy.matcher.peak_bytes_${name}`] ?? 0);
  let volumes = bytes('per_column') * width; // in strips: at least this, up to the strip budget, at most the image
  if (bytes('strip_per_pixel')) volumes = Math.min(bytes('strip_per_pixel') * height * width,
                                                   Math.max(bytes('strip'), volumes));
  return bytes('fixed') + bytes('per_pixel') * height * width + volumes;
}

/** Jet-like colour of t in [0, 1]: blue (small disparity: far) to red (large: near). */
function colour(t) {
  const r = Math.max(0, Math.min(1, 1.5 - Math.abs(4 * t - 3)));
  const g = Math.max(0, Math.min(1, 1.5 - Math.abs(4 * t - 2)));
  const b = Math.max(0, Math.min(1, 1.5 - Math.abs(4 * t - 1)));
  return [255 * r, 255 * g, 255 * b];
}

function draw(disparity, height, width, scale) {
  const canvas = $('disparity');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < disparity.length; i++) {
    const v = disparity[i];
    const [r, g, b] = Number.isFinite(v) ? colour(v / scale) : [0, 0, 0];
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  const bar = $('bar').getContext('2d');
  for (let x = 0; x < 300; x++) {
    const [r, g, b] = colour(x / 299);
    bar.fillStyle = `rgb(${r},${g},${b})`;
    bar.fillRect(x, 0, 1, 16);
  }
  $('tickmid').textContent = (scale / 2).toFixed(0);
  $('tickmax').textContent = `${scale.toFixed(0)} px`;
}

/** Float32 (H, W) disparity as Middlebury PFM: little-endian, rows bottom-up, inf = no answer. */
function pfm(disparity, height, width) {
  const header = new TextEncoder().encode(`Pf\n${width} ${height}\n-1\n`);
  const body = new DataView(new ArrayBuffer(4 * width * height));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = disparity[y * width + x];
      body.setFloat32(4 * ((height - 1 - y) * width + x), Number.isFinite(v) ? v : Infinity, true);
    }
  }
  return new Blob([header, body.buffer], { type: 'application/octet-stream' });
}

function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function run() {
  if (!state.session || !state.left || !state.right) return;
  const { left, right } = state;
  if (left.width !== right.width || left.height !== right.height) {
    status(`the images differ in size (${left.width}x${left.height} and ${right.width}x${right.height})`);
    return;
  }
  const need = peakBytes(state.meta, left.height, left.width);
  if (need > WASM_BYTES) {
    const message = `a ${left.width}x${left.height} pair needs about ${(need / 2 ** 30).toFixed(1)} GiB with this ` +
      `file (max disparity ${state.maxDisp}), more than the 4 GiB WebAssembly can address: downscale the images ` +
      'or export a file with a smaller --max-disp';
    status(`error: ${message}`);
    window.stereodeployError = message;
    return;
  }
  status('matching...');
  $('run').disabled = true;
  await new Promise((r) => setTimeout(r, 0)); // let the status paint
  try {
    const tensor = (img) => new ort.Tensor('uint8', img.data, [img.height, img.width, img.channels]);
    const start = performance.now();
    const out = await state.session.run({ left: tensor(left), right: tensor(right) });
    const seconds = (performance.now() - start) / 1000;
    const disparity = out.disparity.data;
    let top = 1;
    for (const v of disparity) if (Number.isFinite(v) && v > top) top = v;
    draw(disparity, left.height, left.width, state.maxDisp || top);
    state.result = { disparity, height: left.height, width: left.width, seconds };
    window.stereodeployResult = state.result; // for tests and the console
    const threads = ort.env.wasm.numThreads;
    status(`${left.width}x${left.height}: ${seconds.toFixed(2)} s (wasm, ${threads} thread${threads > 1 ? 's' : ''})`);
    $('download-png').disabled = $('download-pfm').disabled = false;
  } catch (err) {
    status(`error: ${err.message || err}`);
    window.stereodeployError = String(err.message || err);
  } finally {
    $('run').disabled = false;
  }
}

async function setImage(which, file) {
  state[which] = await decode(file);
  $('run').disabled = !(state.session && state.left && state.right);
  status(state.left && state.right ? 'ready: press Match' : `pick the ${state.left ? 'right' : 'left'} image`);
}

$('left').addEventListener('change', (e) => setImage('left', e.target.files[0]));
$('right').addEventListener('change', (e) => setImage('right', e.target.files[0]));
$('model').addEventListener('change', async (e) => {
  status('loading the model...');
  await loadModel(new Uint8Array(await e.target.files[0].arrayBuffer()), null);
  status('model loaded');
});
$('run').addEventListener('click', run);
$('download-png').addEventListener('click', () => $('disparity').toBlob((b) => download(b, 'disparity.png')));
$('download-pfm').addEventListener('click', () => {
  const r = state.result;
  download(pfm(r.disparity, r.height, r.width), 'disparity.pfm');
});
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const files = [...e.dataTransfer.files];
  const model = files.find((f) => f.name.endsWith('.onnx'));
  if (model) await loadModel(new Uint8Array(await model.arrayBuffer()), null);
  const images = files.filter((f) => f.type.startsWith('image/'));
  if (images[0]) await setImage('left', images[0]);
  if (images[1]) await setImage('right', images[1]);
});

try {
  await loadModel('model.onnx', 'model.onnx.json'); // what `stereodeploy serve-demo` offers
  status(`model loaded (${self.crossOriginIsolated ? 'threads on' : 'not cross-origin isolated: one thread'}); ` +
         'pick two images');
} catch (err) {
  status('no model served: pick a matcher .onnx file');
}
window.stereodeployReady = true;
