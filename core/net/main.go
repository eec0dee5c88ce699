package boxnet

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// logger writes to stderr (stdout carries only the ready line). BOXLITE_NET_LOG=debug adds
// refusals and per-connection failures; payloads are never logged.
var logger = newLogger()

func newLogger() *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("BOXLITE_NET_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

type readyLine struct {
	Ready bool   `json:"ready"`
	Ports []Port `json:"ports"`
}

// Main is boxlite-net: `boxlite-net --config FILE`. It prints one JSON line on stdout, ready
// (with the ports bound) or error (and returns 1), then serves until stdin reaches end of file
// (the supervisor holds a pipe open; its death closes it) or SIGTERM/SIGINT arrives.
func Main(args []string, stdin io.Reader, stdout io.Writer) int {
	// Sockets are born owner-only; listenUnix then sets exactly 0600.
	syscall.Umask(0o077)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	helper, err := start(args)
	if err != nil {
		_ = json.NewEncoder(stdout).Encode(errorReply{err.Error()})
		return 1
	}
	defer helper.Close()
	if err := json.NewEncoder(stdout).Encode(readyLine{Ready: true, Ports: helper.Ports()}); err != nil {
		return 1
	}

	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
		logger.Debug("stdin closed: exiting")
	case sig := <-signals:
		logger.Debug("exiting on signal", "signal", sig)
	}
	return 0
}

func start(args []string) (*Helper, error) {
	flags := flag.NewFlagSet("boxlite-net", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	configPath := flags.String("config", "", "JSON config file")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	if *configPath == "" || flags.NArg() > 0 {
		return nil, errors.New("usage: boxlite-net --config FILE")
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		return nil, err
	}
	return Start(cfg)
}
