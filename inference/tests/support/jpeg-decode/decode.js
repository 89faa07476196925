// Usage: node decode.js IMAGE.jpg
// Writes "WIDTH HEIGHT\n" and then the packed RGB24 pixels to stdout.
"use strict";
const fs = require("fs");
const jpeg = require("jpeg-js");

const img = jpeg.decode(fs.readFileSync(process.argv[2]), { useTArray: true, formatAsRGBA: false });
process.stdout.write(`${img.width} ${img.height}\n`);
process.stdout.write(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length));
