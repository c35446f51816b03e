package dfprom_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// scraper serves reg's /metrics over HTTP on 127.0.0.1 for the test.
type scraper struct {
	url    string
	client *http.Client
}

func serveMetrics(t *testing.T, reg *prometheus.Registry) *scraper {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	return &scraper{url: srv.URL + "/metrics", client: &http.Client{Transport: tr}}
}

// scrape fetches and parses the text exposition.
func (s *scraper) scrape(t *testing.T) scrape {
	t.Helper()
	resp, err := s.client.Get(s.url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// scrape is one parsed scrape, by metric family name.
type scrape map[string]*dto.MetricFamily

// value returns the value of the series of family name whose labels include
// want (a counter's or gauge's value, a histogram's sample count), or 0
// when there is no such series.
func (s scrape) value(name string, want map[string]string) float64 {
	fam, ok := s[name]
	if !ok {
		return 0
	}
	total := 0.0
	for _, m := range fam.GetMetric() {
		if !matches(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

func matches(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
