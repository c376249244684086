package remote

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// ErrDest is a destination that does not parse.
var ErrDest = errors.New("bad destination")

// Dest is where a command's other end runs.
type Dest struct {
	User string // "" = ssh's default
	Host string // "" = this machine (no ssh: the agent runs as a child process)
	Port int    // 0 = ssh's default
	Path string // on that host: VG/LV, /dev/VG/LV, a device, a directory
}

// ParseDest reads a destination in one of three spellings:
//
//   - ssh://[USER@]HOST[:PORT]/PATH. HOST may be an IPv6 address in
//     brackets. The path is what follows the slash after the host, made
//     absolute unless it is a VG/LV: a path with exactly one slash that
//     does not begin with "dev/" (ssh://h/vg0/vm1 is vg0/vm1) is kept as
//     it is; any other (ssh://h/dev/vg0/vm1, ssh://h/srv/backup/store,
//     ssh://h/backup) gets a leading slash. A second slash makes any path
//     absolute: ssh://h//vg0/vm1 is /vg0/vm1.
//   - lvmsync's [USER@]HOST:/PATH, only with an absolute path after the
//     colon and no slash before it, so vg0/vm1 and ./a:b stay local.
//     HOST may be [IPv6]. There is no port in this spelling: use ssh://
//     or --rsh 'ssh -p PORT'.
//   - anything else is a local path or VG/LV on this machine.
func ParseDest(s string) (Dest, error) {
	if s == "" {
		return Dest{}, fmt.Errorf("%w: empty", ErrDest)
	}
	if rest, ok := strings.CutPrefix(s, "ssh://"); ok {
		return parseURL(s, rest)
	}
	if i := strings.Index(s, ":/"); i >= 0 && !strings.Contains(s[:i], "/") {
		host, path := s[:i], s[i+1:]
		// An IPv6 address in brackets holds colons of its own.
		if strings.HasPrefix(s, "[") || strings.Contains(s, "@[") {
			j := strings.Index(s, "]:")
			if j < 0 || strings.Contains(s[:j], "/") {
				return Dest{}, fmt.Errorf("%w: %q: an IPv6 address in brackets must be followed by :/PATH", ErrDest, s)
			}
			host, path = s[:j+1], s[j+2:]
		}
		if !strings.HasPrefix(path, "/") {
			return Dest{}, fmt.Errorf("%w: %q: the path after HOST: must be absolute", ErrDest, s)
		}
		d := Dest{Path: path}
		var err error
		if d.User, d.Host, err = userHost(s, host); err != nil {
			return Dest{}, err
		}
		if strings.Contains(d.Host, ":") && !strings.HasPrefix(host, "[") && !strings.Contains(host, "@[") {
			return Dest{}, fmt.Errorf("%w: %q: write an IPv6 address in brackets: [%s]:%s", ErrDest, s, d.Host, path)
		}
		return d, checkPath(s, d.Path)
	}
	return Dest{Path: s}, nil
}

func parseURL(s, rest string) (Dest, error) {
	auth, path, ok := strings.Cut(rest, "/")
	if !ok || path == "" || path == "/" {
		return Dest{}, fmt.Errorf("%w: %q has no path after the host: ssh://[USER@]HOST[:PORT]/PATH", ErrDest, s)
	}
	switch {
	case strings.HasPrefix(path, "/"):
	case strings.HasPrefix(path, "dev/"), strings.Count(path, "/") != 1:
		path = "/" + path
	}
	d := Dest{Path: path}
	user, hostport, hasUser := strings.Cut(auth, "@")
	if !hasUser {
		user, hostport = "", auth
	}
	host, port := hostport, ""
	if strings.HasPrefix(hostport, "[") {
		j := strings.Index(hostport, "]")
		if j < 0 {
			return Dest{}, fmt.Errorf("%w: %q: unclosed [ in the host", ErrDest, s)
		}
		host = hostport[:j+1]
		switch tail := hostport[j+1:]; {
		case tail == "":
		case strings.HasPrefix(tail, ":"):
			port = tail[1:]
			if port == "" {
				return Dest{}, fmt.Errorf("%w: %q: no port after the colon", ErrDest, s)
			}
		default:
			return Dest{}, fmt.Errorf("%w: %q: %q after the host", ErrDest, s, tail)
		}
	} else if h, p, ok := strings.Cut(hostport, ":"); ok {
		if strings.Contains(p, ":") {
			return Dest{}, fmt.Errorf("%w: %q: write an IPv6 address in brackets: ssh://[%s]/PATH", ErrDest, s, hostport)
		}
		if p == "" {
			return Dest{}, fmt.Errorf("%w: %q: no port after the colon", ErrDest, s)
		}
		host, port = h, p
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return Dest{}, fmt.Errorf("%w: %q: port %q is not a number from 1 to 65535", ErrDest, s, port)
		}
		d.Port = n
	}
	if hasUser {
		host = user + "@" + host
	}
	var err error
	if d.User, d.Host, err = userHost(s, host); err != nil {
		return Dest{}, err
	}
	return d, checkPath(s, d.Path)
}

// userHost splits [USER@]HOST, with HOST perhaps [IPv6], and refuses what
// ssh would read as an option or what is no host name at all.
func userHost(s, uh string) (user, host string, err error) {
	if u, h, ok := strings.Cut(uh, "@"); ok {
		if u == "" {
			return "", "", fmt.Errorf("%w: %q: empty user name before @", ErrDest, s)
		}
		user, uh = u, h
	}
	host = uh
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") || len(host) < 3 {
			return "", "", fmt.Errorf("%w: %q: bad IPv6 address %q", ErrDest, s, host)
		}
		host = host[1 : len(host)-1]
		for _, r := range host {
			if !strings.ContainsRune("0123456789abcdefABCDEF:.%", r) && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return "", "", fmt.Errorf("%w: %q: bad IPv6 address %q", ErrDest, s, host)
			}
		}
	}
	switch {
	case host == "":
		return "", "", fmt.Errorf("%w: %q: no host", ErrDest, s)
	case strings.HasPrefix(host, "-"), strings.HasPrefix(user, "-"):
		return "", "", fmt.Errorf("%w: %q: a host or user beginning with - would be read by ssh as an option", ErrDest, s)
	case strings.ContainsAny(host, "@/[]"):
		return "", "", fmt.Errorf("%w: %q: bad host name %q", ErrDest, s, host)
	}
	for _, w := range []string{user, host} {
		if i := strings.IndexFunc(w, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
			return "", "", fmt.Errorf("%w: %q: space or control character in %q", ErrDest, s, w)
		}
	}
	return user, host, nil
}

func checkPath(s, path string) error {
	if err := checkWord(path); err != nil {
		return fmt.Errorf("%w: %q: the path %v", ErrDest, s, err)
	}
	return nil
}

// Remote reports whether d is on another host (reached over ssh).
func (d Dest) Remote() bool { return d.Host != "" }

// String gives d back in a spelling ParseDest reads as d: HOST:/PATH for
// an absolute path without a port, else ssh://.
func (d Dest) String() string {
	if !d.Remote() {
		return d.Path
	}
	host := d.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if d.User != "" {
		host = d.User + "@" + host
	}
	if d.Port == 0 && strings.HasPrefix(d.Path, "/") {
		return host + ":" + d.Path
	}
	if d.Port != 0 {
		host += ":" + strconv.Itoa(d.Port)
	}
	p := d.Path
	if rel, ok := strings.CutPrefix(p, "/"); ok {
		// Written without its slash, a VG/LV-like path would come back
		// relative.
		p = rel
		if !strings.HasPrefix(rel, "dev/") && strings.Count(rel, "/") == 1 {
			p = "/" + rel
		}
	}
	return "ssh://" + host + "/" + p
}

// Where names d's host for messages: USER@HOST, or "this host".
func (d Dest) Where() string {
	if !d.Remote() {
		return "this host"
	}
	if d.User != "" {
		return d.User + "@" + d.Host
	}
	return d.Host
}
