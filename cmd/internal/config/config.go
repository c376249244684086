// Package config reads thinback's configuration file: the stores a host
// backs up into and the jobs that say what goes where, so that
// "thinback run JOB" (and a systemd timer) needs no command line.
//
// The file is TOML, read with github.com/pelletier/go-toml/v2, which
// gives the line of a syntax error, of an unknown key and of a value of
// the wrong type; the remaining checks find their lines through the same
// parser's syntax tree. Every error is an *Error naming the file, the line
// and the job or store.
//
//	[defaults]
//	store = "local"
//	metrics_file = "/var/lib/node_exporter/textfile/thinback.prom"
//
//	[store.local]
//	location = "/backup"
//
//	[store.offsite]
//	location = "s3:https://s3.example.net/backups/host1"
//	credentials_file = "/etc/thinback/offsite.credentials"
//	key_file = "/etc/thinback/offsite.key"
//
//	[job.vms]
//	volumes = ["vg0/vm1", "vg0/vm2"]
//	keep_hourly = 24
//	keep_daily = 7
//	copy_to = ["offsite"]
//	copy_keep_daily = 30
//
// Secrets never stand in the file: S3 credentials come from a shared
// credentials file (credentials_file, profile) or from environment
// variables the store names (access_key_env, secret_key_env), a store's
// key from key_file, password_file or password_command.
package config

import (
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// DefaultPath is where thinback looks without --config or $THINBACK_CONFIG.
const DefaultPath = "/etc/thinback/thinback.conf"

// ErrInvalid is what every *Error matches (errors.Is): the file is not a
// configuration thinback can use.
var ErrInvalid = errors.New("invalid configuration")

// Error is one thing wrong in a configuration file, at a line (0: the file
// as a whole).
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Config is a loaded, valid configuration.
type Config struct {
	Path   string
	Stores map[string]*Store
	Jobs   []*Job // in the order of the file

	lines map[string]int // see keyLines
}

// Store is a [store.NAME] table.
type Store struct {
	Name     string
	Line     int
	Location string // a directory, s3:https://HOST/BUCKET/PREFIX or ssh://HOST/PATH
	// S3 stores.
	Region, BucketLookup, CACert, Cache string
	CredentialsFile, Profile            string
	AccessKeyEnv, SecretKeyEnv          string // names of environment variables
	// Encrypted stores: one of these unlocks the key.
	KeyFile, PasswordFile, PasswordCommand string
}

// IsS3 says whether the store is on S3-compatible object storage.
func (s *Store) IsS3() bool { return strings.HasPrefix(s.Location, "s3:") }

// Retention is a job's --keep-* options; nil fields are not given.
type Retention struct {
	Last    *int `toml:"keep_last"`
	Hourly  *int `toml:"keep_hourly"`
	Daily   *int `toml:"keep_daily"`
	Weekly  *int `toml:"keep_weekly"`
	Monthly *int `toml:"keep_monthly"`
	Yearly  *int `toml:"keep_yearly"`
}

// Rule is one retention option: Name is the period ("daily") of
// --keep-daily.
type Rule struct {
	Name string
	N    int
}

// Rules lists the options given, in the order of the --keep-* flags.
func (r Retention) Rules() []Rule {
	var out []Rule
	for _, f := range r.fields() {
		if *f.p != nil {
			out = append(out, Rule{f.name, **f.p})
		}
	}
	return out
}

func (r *Retention) fields() []struct {
	name string
	p    **int
} {
	return []struct {
		name string
		p    **int
	}{{"last", &r.Last}, {"hourly", &r.Hourly}, {"daily", &r.Daily}, {"weekly", &r.Weekly}, {"monthly", &r.Monthly}, {"yearly", &r.Yearly}}
}

// inherit fills what r does not give from d.
func (r *Retention) inherit(d Retention) {
	df := d.fields()
	for i, f := range r.fields() {
		if *f.p == nil {
			*f.p = *df[i].p
		}
	}
}

// Job is a [job.NAME] table with the [defaults] it inherits applied.
type Job struct {
	Name string
	Line int
	// What it backs up: LVs (VG/LV), every LV of a VG but those
	// excluded, or image files.
	Volumes []string
	All     string
	Exclude []string
	Files   []string

	Store        *Store
	Keep         Retention
	Pre, Post    string
	SnapshotSize string
	Level        int // 0: backup's default
	MetricsFile  string
	// After the backup the volumes are copied to these stores, each then
	// pruned with CopyKeep.
	CopyTo   []*Store
	CopyKeep Retention
}

// Job returns the job called name, or nil.
func (c *Config) Job(name string) *Job {
	for _, j := range c.Jobs {
		if j.Name == name {
			return j
		}
	}
	return nil
}

// The file's shape. Pointers tell "not given" from a zero, for what a
// job inherits from [defaults].
type fileShape struct {
	Defaults *jobShape             `toml:"defaults"`
	Store    map[string]storeShape `toml:"store"`
	Job      map[string]jobShape   `toml:"job"`
}

type storeShape struct {
	Location        string `toml:"location"`
	Region          string `toml:"region"`
	BucketLookup    string `toml:"bucket_lookup"`
	CACert          string `toml:"cacert"`
	Cache           string `toml:"cache"`
	CredentialsFile string `toml:"credentials_file"`
	Profile         string `toml:"profile"`
	AccessKeyEnv    string `toml:"access_key_env"`
	SecretKeyEnv    string `toml:"secret_key_env"`
	KeyFile         string `toml:"key_file"`
	PasswordFile    string `toml:"password_file"`
	PasswordCommand string `toml:"password_command"`
}

type copyKeep struct {
	Last    *int `toml:"copy_keep_last"`
	Hourly  *int `toml:"copy_keep_hourly"`
	Daily   *int `toml:"copy_keep_daily"`
	Weekly  *int `toml:"copy_keep_weekly"`
	Monthly *int `toml:"copy_keep_monthly"`
	Yearly  *int `toml:"copy_keep_yearly"`
}

type jobShape struct {
	Volumes []string `toml:"volumes"`
	All     string   `toml:"all"`
	Exclude []string `toml:"exclude"`
	Files   []string `toml:"files"`
	Store   *string  `toml:"store"`
	Retention
	copyKeep
	Pre          *string  `toml:"pre"`
	Post         *string  `toml:"post"`
	SnapshotSize *string  `toml:"snapshot_size"`
	Level        *int     `toml:"level"`
	MetricsFile  *string  `toml:"metrics_file"`
	CopyTo       []string `toml:"copy_to"`
}

func (c copyKeep) retention() Retention {
	return Retention(c)
}

// Load reads and checks the configuration file at path. A bad file
// gives every *Error found, joined (errors.Join), in the order of
// their lines.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse is Load of data read from the file path names.
func Parse(path string, data []byte) (*Config, error) {
	var f fileShape
	dec := toml.NewDecoder(strings.NewReader(string(data))).DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, decodeError(path, err)
	}
	lines := keyLines(data)
	l := &loader{file: path, lines: lines}
	cfg := &Config{Path: path, Stores: map[string]*Store{}, lines: lines}
	for name, s := range f.Store {
		cfg.Stores[name] = l.store(name, s)
	}
	var def jobShape
	if f.Defaults != nil {
		def = *f.Defaults
		for _, k := range []string{"volumes", "all", "exclude", "files"} {
			if _, ok := lines["defaults."+k]; ok {
				l.errf("defaults."+k, "[defaults]: %s belongs in a job: a default would back up the same volumes in every job", k)
			}
		}
		l.retention("defaults", "[defaults]", def.Retention, "keep_")
		l.retention("defaults", "[defaults]", def.copyKeep.retention(), "copy_keep_")
	}
	for name, js := range f.Job {
		if j := l.job(cfg, name, js, def); j != nil {
			cfg.Jobs = append(cfg.Jobs, j)
		}
	}
	sort.Slice(cfg.Jobs, func(a, b int) bool { return cfg.Jobs[a].Line < cfg.Jobs[b].Line })
	if len(l.errs) > 0 {
		sort.SliceStable(l.errs, func(a, b int) bool { return l.errs[a].(*Error).Line < l.errs[b].(*Error).Line })
		return nil, errors.Join(l.errs...)
	}
	if len(cfg.Jobs) == 0 {
		return nil, &Error{File: path, Msg: "no [job.NAME] table: a configuration needs at least one job"}
	}
	return cfg, nil
}

type loader struct {
	file  string
	lines map[string]int
	errs  []error
}

// errf records an error at the line of key (a dotted path, or its
// nearest enclosing table's).
func (l *loader) errf(key, format string, a ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: l.line(key), Msg: fmt.Sprintf(format, a...)})
}

func (l *loader) line(key string) int {
	for {
		if n, ok := l.lines[key]; ok {
			return n
		}
		i := strings.LastIndexAny(key, ".#")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
}

// storeNames are what a store or job may be called: they become parts
// of unit names (thinback@JOB.timer) and of command lines.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

var envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (l *loader) store(name string, s storeShape) *Store {
	key := "store." + name
	what := fmt.Sprintf("store %q", name)
	if !nameRE.MatchString(name) {
		l.errf(key, "%s: a store's name is letters, digits, '.', '_' and '-'", what)
	}
	st := &Store{
		Name: name, Line: l.line(key), Location: s.Location,
		Region: s.Region, BucketLookup: s.BucketLookup, CACert: s.CACert, Cache: s.Cache,
		CredentialsFile: s.CredentialsFile, Profile: s.Profile, AccessKeyEnv: s.AccessKeyEnv, SecretKeyEnv: s.SecretKeyEnv,
		KeyFile: s.KeyFile, PasswordFile: s.PasswordFile, PasswordCommand: s.PasswordCommand,
	}
	if s.Location == "" {
		l.errf(key, "%s: no location: give location = \"/backup\", \"s3:https://HOST/BUCKET/PREFIX\" or \"ssh://HOST/PATH\"", what)
	}
	s3Only := map[string]string{"region": s.Region, "bucket_lookup": s.BucketLookup, "cacert": s.CACert, "cache": s.Cache,
		"credentials_file": s.CredentialsFile, "profile": s.Profile, "access_key_env": s.AccessKeyEnv, "secret_key_env": s.SecretKeyEnv}
	if s.Location != "" && !st.IsS3() {
		for _, k := range sortedKeys(s3Only) {
			if s3Only[k] != "" {
				l.errf(key+"."+k, "%s: %s is for S3 stores, and %s is not one", what, k, s.Location)
			}
		}
	}
	switch s.BucketLookup {
	case "", "auto", "dns", "path":
	default:
		l.errf(key+".bucket_lookup", "%s: bucket_lookup = %q: give auto, dns or path", what, s.BucketLookup)
	}
	if (s.AccessKeyEnv == "") != (s.SecretKeyEnv == "") {
		l.errf(key, "%s: give both access_key_env and secret_key_env (the names of the variables holding them), or neither", what)
	}
	if s.AccessKeyEnv != "" && (s.CredentialsFile != "" || s.Profile != "") {
		l.errf(key+".access_key_env", "%s: give access_key_env/secret_key_env or credentials_file/profile, not both", what)
	}
	for k, v := range map[string]string{"access_key_env": s.AccessKeyEnv, "secret_key_env": s.SecretKeyEnv} {
		if v != "" && !envRE.MatchString(v) {
			l.errf(key+"."+k, "%s: %s = %q is not the name of an environment variable (the secret itself never goes in this file)", what, k, v)
		}
	}
	n := 0
	for _, v := range []string{s.KeyFile, s.PasswordFile, s.PasswordCommand} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		l.errf(key, "%s: give one of key_file, password_file and password_command", what)
	}
	return st
}

// retention checks that every keep_* is 0 or more.
func (l *loader) retention(key, what string, r Retention, prefix string) {
	for _, rule := range r.Rules() {
		if rule.N < 0 {
			l.errf(key+"."+prefix+rule.Name, "%s: %s%s = %d: keep a number of snapshots, 0 or more", what, prefix, rule.Name, rule.N)
		}
	}
}

func (l *loader) job(cfg *Config, name string, js, def jobShape) *Job {
	key := "job." + name
	what := fmt.Sprintf("job %q", name)
	if !nameRE.MatchString(name) {
		l.errf(key, "%s: a job's name is letters, digits, '.', '_' and '-' (it names a systemd unit)", what)
	}
	l.retention(key, what, js.Retention, "keep_")
	l.retention(key, what, js.copyKeep.retention(), "copy_keep_")
	j := &Job{Name: name, Line: l.line(key), Volumes: js.Volumes, All: js.All, Exclude: js.Exclude, Files: js.Files}
	j.Keep = js.Retention
	j.Keep.inherit(def.Retention)
	j.CopyKeep = js.copyKeep.retention()
	j.CopyKeep.inherit(def.copyKeep.retention())
	str := func(p, d *string) string {
		if p != nil {
			return *p
		}
		if d != nil {
			return *d
		}
		return ""
	}
	j.Pre, j.Post = str(js.Pre, def.Pre), str(js.Post, def.Post)
	j.SnapshotSize, j.MetricsFile = str(js.SnapshotSize, def.SnapshotSize), str(js.MetricsFile, def.MetricsFile)
	switch {
	case js.Level != nil:
		j.Level = *js.Level
	case def.Level != nil:
		j.Level = *def.Level
	}
	if j.Level != 0 && (j.Level < 1 || j.Level > 7) {
		k := key + ".level"
		if js.Level == nil {
			k = "defaults.level"
		}
		l.errf(k, "%s: level = %d: give 1 (fastest) to 7 (smallest)", what, j.Level)
	}

	// What to back up: exactly one kind.
	kinds := 0
	for _, given := range []bool{len(js.Volumes) > 0, js.All != "", len(js.Files) > 0} {
		if given {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		l.errf(key, "%s: no volumes: give volumes = [\"VG/LV\", ...], all = \"VG\" or files = [\"/path/image\", ...]", what)
	case kinds > 1:
		l.errf(key, "%s: give one of volumes, all and files", what)
	}
	for i, v := range js.Volumes {
		if !validLV(v) {
			l.errf(fmt.Sprintf("%s.volumes#%d", key, i), "%s: volume %q is not VG/LV (e.g. \"vg0/vm1\")", what, v)
		}
	}
	if js.All != "" && !validLVName(js.All) {
		l.errf(key+".all", "%s: all = %q is not the name of a volume group", what, js.All)
	}
	if len(js.Exclude) > 0 && js.All == "" {
		l.errf(key+".exclude", "%s: exclude is for all = \"VG\"", what)
	}
	for i, x := range js.Exclude {
		if _, err := path.Match(x, ""); err != nil || x == "" || strings.Contains(x, "/") {
			l.errf(fmt.Sprintf("%s.exclude#%d", key, i), "%s: exclude %q is not an LV name or a shell pattern of one", what, x)
		}
	}
	for i, f := range js.Files {
		if f == "" || !strings.HasPrefix(f, "/") {
			l.errf(fmt.Sprintf("%s.files#%d", key, i), "%s: file %q is not an absolute path", what, f)
		}
	}
	if j.SnapshotSize != "" && len(js.Files) > 0 {
		l.errf(key, "%s: snapshot_size is for LVs, not files", what)
	}
	if dup := firstDup(append(append([]string{}, js.Volumes...), js.Files...)); dup != "" {
		l.errf(key, "%s: %q is listed twice", what, dup)
	}

	// Where to.
	storeName := str(js.Store, def.Store)
	storeKey := key + ".store"
	if js.Store == nil {
		storeKey = "defaults.store"
	}
	switch st := cfg.Stores[storeName]; {
	case storeName == "":
		l.errf(key, "%s: no store: give store = \"NAME\" of a [store.NAME] table (or one in [defaults])", what)
	case st == nil:
		l.errf(storeKey, "%s: store %q is not defined: add a [store.%s] table", what, storeName, storeName)
	default:
		j.Store = st
	}
	copyKey := key + ".copy_to"
	copyTo := js.CopyTo
	if copyTo == nil {
		copyTo, copyKey = def.CopyTo, "defaults.copy_to"
	}
	for i, n := range copyTo {
		st := cfg.Stores[n]
		switch {
		case st == nil:
			l.errf(fmt.Sprintf("%s#%d", copyKey, i), "%s: copy_to store %q is not defined: add a [store.%s] table", what, n, n)
		case n == storeName:
			l.errf(fmt.Sprintf("%s#%d", copyKey, i), "%s: copy_to %q is the job's own store", what, n)
		case slices.Contains(j.CopyTo, st):
			l.errf(fmt.Sprintf("%s#%d", copyKey, i), "%s: copy_to %q is listed twice", what, n)
		default:
			j.CopyTo = append(j.CopyTo, st)
		}
	}
	if len(j.CopyKeep.Rules()) > 0 && len(copyTo) == 0 {
		l.errf(key, "%s: copy_keep_* without copy_to", what)
	}
	return j
}

// validLV says whether s is VG/LV as LVM names them.
func validLV(s string) bool {
	vg, lv, ok := strings.Cut(s, "/")
	return ok && validLVName(vg) && validLVName(lv)
}

// validLVName is LVM's rule for VG and LV names: letters, digits and
// "+_.-", not starting with '-', not "." or "..".
func validLVName(s string) bool {
	if s == "" || s == "." || s == ".." || s[0] == '-' || len(s) > 127 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+_.-", r)) {
			return false
		}
	}
	return true
}

func firstDup(s []string) string {
	seen := map[string]bool{}
	for _, v := range s {
		if seen[v] {
			return v
		}
		seen[v] = true
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// decodeError turns the TOML decoder's errors into *Error: the syntax
// error, every unknown key, or a value of the wrong type.
func decodeError(file string, err error) error {
	var de *toml.DecodeError
	var sm *toml.StrictMissingError
	switch {
	case errors.As(err, &sm):
		var errs []error
		for _, e := range sm.Errors {
			row, _ := e.Position()
			errs = append(errs, &Error{File: file, Line: row, Msg: unknownKey(e.Key())})
		}
		return errors.Join(errs...)
	case errors.As(err, &de):
		row, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if m := typeRE.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("%s is wanted, not a %s", goType(m[2]), m[1])
		}
		if k := de.Key(); len(k) > 0 {
			msg = strings.Join(k, ".") + ": " + msg
		}
		return &Error{File: file, Line: row, Msg: msg}
	}
	return &Error{File: file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

var typeRE = regexp.MustCompile(`cannot decode TOML (\w+) into .* of type (\S+)$`)

// goType says what a value of a field's Go type is written as.
func goType(t string) string {
	switch strings.TrimPrefix(t, "*") {
	case "int":
		return "a whole number"
	case "string":
		return "a string in quotes"
	case "[]string":
		return `a list of strings (["a", "b"])`
	}
	return "a table"
}

func unknownKey(k toml.Key) string {
	switch {
	case k[0] != "store" && k[0] != "job" && k[0] != "defaults":
		return fmt.Sprintf("unknown table or key %q: the file has [defaults], [store.NAME] and [job.NAME]", k[0])
	case len(k) == 2 && k[0] != "defaults":
		return fmt.Sprintf("%q: give a table [%s.NAME]", strings.Join(k, "."), k[0])
	case len(k) >= 3 && k[0] == "store":
		return fmt.Sprintf("store %q: unknown key %q", k[1], strings.Join(k[2:], "."))
	case len(k) >= 3 && k[0] == "job":
		return fmt.Sprintf("job %q: unknown key %q", k[1], strings.Join(k[2:], "."))
	case k[0] == "defaults":
		return fmt.Sprintf("[defaults]: unknown key %q", strings.Join(k[1:], "."))
	}
	return fmt.Sprintf("unknown key %q", strings.Join(k, "."))
}

// keyLines maps each key of a document that decodes to the line it is
// on: "job.web" is the line of [job.web], "job.web.store" of its store
// key, "job.web.volumes#1" of the second volume.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	var table []string
	lineOf := func(r unstable.Range) int { return p.Shape(r).Start.Line }
	keyOf := func(n *unstable.Node) ([]string, int) {
		var parts []string
		line := 0
		it := n.Key()
		for it.Next() {
			k := it.Node()
			parts = append(parts, string(k.Data))
			if line == 0 {
				line = lineOf(k.Raw)
			}
		}
		return parts, line
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyOf(e)
			table = parts
			set(lines, strings.Join(parts, "."), line)
		case unstable.KeyValue:
			parts, line := keyOf(e)
			full := strings.Join(append(append([]string{}, table...), parts...), ".")
			set(lines, full, line)
			if v := e.Value(); v != nil && v.Kind == unstable.Array {
				it := v.Children()
				for i := 0; it.Next(); i++ {
					if c := it.Node(); c.Raw.Length > 0 {
						set(lines, fmt.Sprintf("%s#%d", full, i), lineOf(c.Raw))
					}
				}
			}
		}
	}
	return lines
}

func set(m map[string]int, k string, line int) {
	if _, ok := m[k]; !ok && line > 0 {
		m[k] = line
	}
}
