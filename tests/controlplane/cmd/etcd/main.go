// Command etcd runs a single-member etcd server in-process through
// go.etcd.io/etcd/server/v3/embed, at the version k8s.io/kubernetes requires
// (see go.mod). It is meant for local test control planes only: one member,
// plain HTTP on loopback, no auth.
//
// It prints "etcd ready" on stdout once the server serves clients, and shuts
// down cleanly (exit 0) on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func parseURL(flagName, s string) url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		fmt.Fprintf(os.Stderr, "etcd: invalid --%s %q: %v\n", flagName, s, err)
		os.Exit(2)
	}
	return *u
}

func main() {
	var (
		dataDir       = flag.String("data-dir", "default.etcd", "directory holding the etcd data")
		name          = flag.String("name", "default", "member name")
		clientURL     = flag.String("listen-client-url", "http://127.0.0.1:2379", "URL to serve clients on (also advertised)")
		peerURL       = flag.String("listen-peer-url", "http://127.0.0.1:2380", "URL to serve peers on (also advertised)")
		logLevel      = flag.String("log-level", "warn", "debug, info, warn, error, panic or fatal")
		unsafeNoFsync = flag.Bool("unsafe-no-fsync", false, "skip fsync (faster, loses data on a machine crash; fine for tests)")
		quotaBytes    = flag.Int64("quota-backend-bytes", 0, "backend size quota in bytes (0: etcd default)")
		startTimeout  = flag.Duration("start-timeout", 60*time.Second, "how long to wait for the server to become ready")
	)
	flag.Parse()

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cu := parseURL("listen-client-url", *clientURL)
	pu := parseURL("listen-peer-url", *peerURL)
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = *unsafeNoFsync
	// embed.NewConfig leaves this at 0, which logs every request as "expensive";
	// the etcd binary's flag default is 300ms.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	if *quotaBytes > 0 {
		cfg.QuotaBackendBytes = *quotaBytes
	}

	// Subscribe before starting so that a signal during start-up is not lost.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		os.Exit(1)
	}

	select {
	case <-e.Server.ReadyNotify():
		fmt.Printf("etcd ready: client %s, peer %s, data %s\n", cu.String(), pu.String(), cfg.Dir)
	case <-time.After(*startTimeout):
		e.Server.Stop()
		e.Close()
		fmt.Fprintf(os.Stderr, "etcd: not ready after %s\n", *startTimeout)
		os.Exit(1)
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "etcd: got %s during start-up, stopping\n", sig)
		e.Close()
		os.Exit(0)
	}

	select {
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "etcd: got %s, stopping\n", sig)
		e.Close()
		fmt.Fprintln(os.Stderr, "etcd: stopped")
		os.Exit(0)
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: server error: %v\n", err)
		e.Close()
		os.Exit(1)
	}
}
