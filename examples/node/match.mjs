// Match a rectified stereo pair with a stereodeploy matcher ONNX file in Node.js, and write the disparity as PFM.
//
//   node examples/node/match.mjs --model matcher.onnx --left im0.png --right im1.png --out disp.pfm
//
// The file takes the images as decoders give them (uint8 height x width x channels, 1 to 4 channels) and does
// everything else inside: gray conversion, features, matching and, for `--postprocess full` exports, MC-CNN's
// post-processing. Only onnxruntime-node and two pure-JS decoders (pngjs, jpeg-js) are needed.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { extname } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';

/** Decode a PNG or JPEG file to {data: Uint8Array RGBA, height, width, channels: 4}. */
export function decodeImage(path) {
  const bytes = readFileSync(path);
  const ext = extname(path).toLowerCase();
  if (ext === '.png') {
    const png = PNG.sync.read(bytes); // any bit depth: 16-bit is scaled to 8-bit, gray and palette to RGBA
    return { data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length), height: png.height,
             width: png.width, channels: 4 };
  }
  if (ext === '.jpg' || ext === '.jpeg') {
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 2048 });
    return { data: img.data, height: img.height, width: img.width, channels: 4 };
  }
  throw new Error(`${path}: only PNG and JPEG images are supported`);
}

/** Float32 (H, W) disparity as a Middlebury PFM: little-endian, rows bottom-up, inf where there is no answer. */
export function encodePfm(disparity, height, width) {
  const header = Buffer.from(`Pf\n${width} ${height}\n-1\n`, 'ascii');
  const body = Buffer.alloc(4 * width * height);
  for (let y = 0; y < height; y++) {
    const row = height - 1 - y;
    for (let x = 0; x < width; x++) {
      const v = disparity[y * width + x];
      body.writeFloatLE(Number.isFinite(v) ? v : Infinity, 4 * (row * width + x));
    }
  }
  return Buffer.concat([header, body]);
}

/** The contract of a matcher file: its JSON sidecar (`<model>.json`, written by `stereodeploy export-matcher`). */
export function readSidecar(model) {
  const path = `${model}.json`;
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: export the model with \`stereodeploy export-matcher\`, which writes it ` +
                    'beside the .onnx file');
  }
  const meta = JSON.parse(readFileSync(path, 'utf8')).metadata;
  if (!String(meta['stereodeploy.format']).startsWith('matcher/')) {
    throw new Error(`${model} is not a matcher file: write one with \`stereodeploy export-matcher\``);
  }
  return meta;
}

/** Bytes the file needs at its peak for a height x width pair, by the sidecar's memory model (0 if it has none). */
export function peakBytes(meta, height, width) {
  if (!('stereodeploy.matcher.peak_bytes_fixed' in meta)) return 0;
  const bytes = (name) => Number(meta[`stereodeploy.matcher.peak_bytes_${name}`] ?? 0);
  let volumes = bytes('per_column') * width; // in strips: at least this, up to the strip budget, at most the image
  if (bytes('strip_per_pixel')) volumes = Math.min(bytes('strip_per_pixel') * height * width,
                                                   Math.max(bytes('strip'), volumes));
  return bytes('fixed') + bytes('per_pixel') * height * width + volumes;
}

/** Throw, before any work, when the pair needs more than `limit` bytes. */
export function refuseTooLarge(meta, height, width, limit, where) {
  const need = peakBytes(meta, height, width);
  if (need > limit) {
    const gib = 2 ** 30;
    throw new Error(`a ${width}x${height} pair needs about ${(need / gib).toFixed(2)} GiB with this file (max ` +
                    `disparity ${meta['stereodeploy.max_disp']}), more than the ${(limit / gib).toFixed(2)} GiB ` +
                    `${where}: downscale the images or export a file with a smaller --max-disp`);
  }
}

/** Run the matcher on two decoded images; returns {disparity: Float32Array, height, width, seconds}. */
export async function match(session, left, right) {
  const tensor = (img) => new ort.Tensor('uint8', img.data, [img.height, img.width, img.channels]);
  const start = performance.now();
  const result = await session.run({ left: tensor(left), right: tensor(right) });
  const seconds = (performance.now() - start) / 1000;
  return { disparity: result.disparity.data, height: left.height, width: left.width, seconds };
}

async function main() {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' }, left: { type: 'string' }, right: { type: 'string' }, out: { type: 'string' },
      threads: { type: 'string' }, repeat: { type: 'string', default: '1' }, json: { type: 'boolean' },
      'max-memory-mb': { type: 'string' },
    },
  });
  for (const key of ['model', 'left', 'right', 'out']) {
    if (!values[key]) {
      console.error('usage: node match.mjs --model M.onnx --left L.png --right R.png --out OUT.pfm ' +
                    '[--threads N] [--repeat N] [--json] [--max-memory-mb N]');
      process.exit(2);
    }
  }
  // No memory arena: it keeps every block size it ever held, which doubles the full pipeline's peak memory.
  const options = { executionProviders: ['cpu'], enableCpuMemArena: false };
  if (values.threads) options.intraOpNumThreads = Number(values.threads);
  const meta = readSidecar(values.model);
  const left = decodeImage(values.left);
  const right = decodeImage(values.right);
  const limit = values['max-memory-mb'] ? Number(values['max-memory-mb']) * 2 ** 20 : totalmem();
  refuseTooLarge(meta, left.height, left.width, limit, values['max-memory-mb'] ? 'allowed' : 'this machine has');
  const session = await ort.InferenceSession.create(values.model, options);
  let out = await match(session, left, right);
  const times = [out.seconds];
  for (let i = 1; i < Number(values.repeat); i++) { // --repeat: time several runs, keep the fastest
    out = await match(session, left, right);
    times.push(out.seconds);
  }
  const tmp = `${values.out}.tmp-${process.pid}`;
  writeFileSync(tmp, encodePfm(out.disparity, out.height, out.width));
  renameSync(tmp, values.out); // atomic: a reader never sees half a file
  const peak = process.resourceUsage().maxRSS / 1024; // MiB
  const best = Math.min(...times);
  if (values.json) {
    console.log(JSON.stringify({ seconds: times, peak_rss_mib: peak, width: out.width, height: out.height }));
  } else {
    console.log(`${values.out}: ${out.width}x${out.height} disparity in ${best.toFixed(3)} s ` +
                `(peak rss ${peak.toFixed(0)} MiB)`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(`error: ${err.message ?? err}`);
    process.exit(1);
  });
}
