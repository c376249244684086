package config

import (
	"fmt"
	"io/fs"
	"os"
	"sort"
)

// Check looks at what a loaded configuration refers to on this host, as
// the job will find it when it runs: files that must exist, secrets that
// must be readable by no one else, environment variables that must be
// set. Load has already checked the file itself.
func Check(c *Config) []error {
	l := &loader{file: c.Path, lines: c.lines}
	names := make([]string, 0, len(c.Stores))
	for n := range c.Stores {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := c.Stores[n]
		key := "store." + n
		what := fmt.Sprintf("store %q", n)
		for _, f := range []struct{ key, path string }{
			{"credentials_file", s.CredentialsFile}, {"key_file", s.KeyFile}, {"password_file", s.PasswordFile},
		} {
			if f.path != "" {
				l.secretFile(key+"."+f.key, what, f.key, f.path)
			}
		}
		if s.CACert != "" {
			l.exists(key+".cacert", what, "cacert", s.CACert)
		}
		for _, v := range []struct{ key, name string }{{"access_key_env", s.AccessKeyEnv}, {"secret_key_env", s.SecretKeyEnv}} {
			if v.name != "" && os.Getenv(v.name) == "" {
				l.errf(key+"."+v.key, "%s: %s: $%s is not set (set it in the environment thinback runs in, e.g. the unit's EnvironmentFile=)", what, v.key, v.name)
			}
		}
	}
	for _, j := range c.Jobs {
		for i, f := range j.Files {
			l.exists(fmt.Sprintf("job.%s.files#%d", j.Name, i), fmt.Sprintf("job %q", j.Name), "file", f)
		}
	}
	return l.errs
}

// secretFile checks that a file of secrets exists and that only its owner
// can read it.
func (l *loader) secretFile(key, what, name, path string) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		l.errf(key, "%s: %s: %v", what, name, err)
	case !fi.Mode().IsRegular():
		l.errf(key, "%s: %s %s is not a regular file", what, name, path)
	case fi.Mode().Perm()&0o077 != 0:
		l.errf(key, "%s: %s %s can be read by others (mode %04o): chmod 600 it", what, name, path, fi.Mode().Perm())
	}
}

func (l *loader) exists(key, what, name, path string) {
	if _, err := os.Stat(path); err != nil {
		if pe, ok := err.(*fs.PathError); ok {
			err = pe.Err
		}
		l.errf(key, "%s: %s %s: %v", what, name, path, err)
	}
}
