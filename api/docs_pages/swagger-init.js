// Swagger UI for /openapi.json, from files this server serves; validatorUrl: null stops the
// badge request to the public validator, so the page needs no network beyond this server.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
