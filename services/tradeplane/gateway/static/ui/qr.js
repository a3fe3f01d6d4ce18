// QR codes (deposit addresses, 2FA secrets) drawn as SVG from uqr's module matrix.
import { encode } from "/static/vendor/uqr/uqr.mjs";

/** A QR code as SVG elements (no markup strings, no inline styles: the CSP allows neither). */
export function qrSvg(text) {
  const { data, size } = encode(text, { border: 2 });
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `QR code: ${text}`);
  let d = "";
  data.forEach((row, y) => row.forEach((on, x) => { if (on) d += `M${x} ${y}h1v1h-1z`; }));
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "#000");
  svg.append(path);
  return svg;
}
