// Command libcni-driver runs one CNI network list through libcni, the Go
// library container runtimes embed, so plumb's plugins can be exercised the
// way containerd or CRI-O would call them.
//
// Usage:
//
//	libcni-driver add|check|del <network-name> <netns-path>
//
// Environment:
//
//	NETCONFPATH      directory of .conflist/.conf/.json files (default /etc/cni/net.d)
//	CNI_PATH         colon-separated plugin directories
//	CNI_IFNAME       interface name in the container (default eth0)
//	CNI_ARGS         "K=V;K=V" pairs passed to the plugins as CNI_ARGS
//	CAP_ARGS         JSON object of capability arguments (runtimeConfig)
//	CNI_CONTAINERID  container id (default: derived from the netns path)
//	CNI_CACHE_DIR    libcni cache directory (default libcni's /var/lib/cni)
//
// On add the result is printed to stdout in the version the plugins returned
// it in; check and del print nothing. On any failure the error goes to
// stderr and the exit status is 1; when the error carries a CNI error object
// that object is also printed as JSON on stdout.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// defaultConfDir is where configurations are read from without NETCONFPATH.
const defaultConfDir = "/etc/cni/net.d"

// timeout bounds a whole command so a hung plugin cannot hang a test run.
const timeout = 2 * time.Minute

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s add|check|del <network-name> <netns-path>\n", filepath.Base(os.Args[0]))
}

// envOr returns the value of an environment variable, or def when it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// parseCNIArgs turns "K=V;K=V" into key/value pairs; empty entries are ignored.
func parseCNIArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, item := range strings.Split(s, ";") {
		if item == "" {
			continue
		}
		kv := strings.SplitN(item, "=", 2)
		if len(kv) != 2 || kv[0] == "" {
			return nil, fmt.Errorf("CNI_ARGS: %q is not of the form KEY=VALUE", item)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out, nil
}

// containerID derives a stable, valid container id from a netns path.
func containerID(netns string) string {
	sum := sha512.Sum512([]byte(netns))
	return hex.EncodeToString(sum[:])[:64]
}

// fail reports err and exits 1; a CNI error object inside err is also printed as JSON on stdout.
func fail(err error) {
	var cniErr *types.Error
	if errors.As(err, &cniErr) && cniErr != nil {
		if out, merr := json.Marshal(cniErr); merr == nil {
			fmt.Fprintln(os.Stdout, string(out))
		}
	}
	fmt.Fprintln(os.Stderr, "libcni-driver:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		usage()
		os.Exit(1)
	}
	command, network, netns := os.Args[1], os.Args[2], os.Args[3]
	switch command {
	case "add", "check", "del":
	default:
		usage()
		os.Exit(1)
	}

	list, err := libcni.LoadConfList(envOr("NETCONFPATH", defaultConfDir), network)
	if err != nil {
		fail(fmt.Errorf("loading network %q: %w", network, err))
	}

	if abs, err := filepath.Abs(netns); err == nil {
		netns = abs
	}

	args, err := parseCNIArgs(os.Getenv("CNI_ARGS"))
	if err != nil {
		fail(err)
	}

	var capArgs map[string]interface{}
	if raw := os.Getenv("CAP_ARGS"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &capArgs); err != nil {
			fail(fmt.Errorf("CAP_ARGS is not a JSON object: %w", err))
		}
	}

	rt := &libcni.RuntimeConf{
		ContainerID:    envOr("CNI_CONTAINERID", containerID(netns)),
		NetNS:          netns,
		IfName:         envOr("CNI_IFNAME", "eth0"),
		Args:           args,
		CapabilityArgs: capArgs,
	}

	var paths []string
	for _, p := range filepath.SplitList(os.Getenv("CNI_PATH")) {
		if p != "" {
			paths = append(paths, p)
		}
	}
	cni := libcni.NewCNIConfigWithCacheDir(paths, os.Getenv("CNI_CACHE_DIR"), nil)

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	switch command {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		if result == nil {
			fail(errors.New("ADD succeeded but returned no result"))
		}
		if err := result.Print(); err != nil {
			fail(fmt.Errorf("printing result: %w", err))
		}
		fmt.Println()
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	}
}
