package api

import (
	_ "embed"
	"net/http"
)

// openapiSpec documents this API. docs/openapi-admin.yaml is the same file for readers of
// the repository; TestOpenAPIInSync keeps the two identical and the routes described.
//
//go:embed openapi.yaml
var openapiSpec []byte

// openapi serves the OpenAPI 3 description of the admin API, so a client on the collector
// host can read the contract of the very collector it talks to.
func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(openapiSpec)
}
