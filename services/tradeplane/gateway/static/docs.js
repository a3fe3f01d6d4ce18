// Renders the gateway's OpenAPI description with the vendored Swagger UI (/docs).
// A file of its own, not an inline script: the docs page's CSP allows scripts from the
// gateway only.
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    displayRequestDuration: true,
    filter: true,
    showExtensions: false,
    // Swagger's online validator would send the description elsewhere: off.
    validatorUrl: null,
  });
});
