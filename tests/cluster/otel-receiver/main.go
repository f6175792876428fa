// Command mainstay-otel-receiver is a minimal OpenTelemetry Collector build
// for tests: an OTLP receiver (gRPC/HTTP) feeding the file exporter, so that
// received spans can be read back as JSON lines.
package main

import (
	"context"
	"log"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// telemetryConfig is what `service.telemetry` may hold in this build: only a log level.
// The collector's own metrics and traces are no-ops (no :8888 endpoint).
type telemetryConfig struct {
	Logs struct {
		Level string `mapstructure:"level"`
	} `mapstructure:"logs"`
}

func newTelemetryFactory() telemetry.Factory {
	return telemetry.NewFactory(
		func() component.Config {
			cfg := &telemetryConfig{}
			cfg.Logs.Level = "info"
			return cfg
		},
		telemetry.WithCreateLogger(func(_ context.Context, set telemetry.LoggerSettings, c component.Config) (*zap.Logger, component.ShutdownFunc, error) {
			level, err := zapcore.ParseLevel(c.(*telemetryConfig).Logs.Level)
			if err != nil {
				return nil, nil, err
			}
			zc := zap.NewProductionConfig()
			zc.Level = zap.NewAtomicLevelAt(level)
			zc.Encoding = "console"
			zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
			zc.Sampling = nil
			build := set.BuildZapLogger
			if build == nil {
				build = func(c zap.Config, o ...zap.Option) (*zap.Logger, error) { return c.Build(o...) }
			}
			logger, err := build(zc)
			if err != nil {
				return nil, nil, err
			}
			return logger, func(context.Context) error { _ = logger.Sync(); return nil }, nil
		}),
	)
}

func factories() (otelcol.Factories, error) {
	recv, err := otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	exp, err := otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	return otelcol.Factories{
		Receivers: recv,
		Exporters: exp,
		Telemetry: newTelemetryFactory(), // required: otelcol refuses a nil telemetry factory
	}, nil
}

func main() {
	settings := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "mainstay-otel-receiver",
			Description: "Minimal OTLP trace receiver writing spans to a file (test helper)",
			Version:     "0.165.0",
		},
		Factories: factories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(),
					envprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
				DefaultScheme: "env",
			},
		},
	}
	if err := otelcol.NewCommand(settings).Execute(); err != nil {
		log.Fatal(err)
	}
}
