package dfprom_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dfstream/dfstream/internal/scrapetest"
)

// scraper serves a registry's /metrics over HTTP on 127.0.0.1 for a test.
type scraper struct{ url string }

func serveMetrics(t *testing.T, reg *prometheus.Registry) *scraper {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &scraper{url: srv.URL + "/metrics"}
}

func (s *scraper) scrape(t *testing.T) scrapetest.Families { return scrapetest.Scrape(t, s.url) }
