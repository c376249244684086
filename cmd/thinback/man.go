package main

//go:generate go run . help --man ../../docs/man

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// manSection is the manual section of thinback's pages: user commands.
const manSection = 1

// manPages renders the manual pages of app from its command definitions:
// thinback.1 with every command, and thinback-COMMAND.1 for each one, so
// "man thinback-backup" shows one command's options without the others'.
func manPages(app *cli.App) (map[string]string, error) {
	// The options every run adds (--help, --version), whether or not app
	// has run yet.
	app.Setup()
	pages := map[string]string{}
	root := &cli.App{
		Name:        app.Name,
		Usage:       app.Usage,
		Description: manText(app.Description) + "\n\n# EXIT STATUS\n\n" + manBlock(strings.TrimPrefix(exitCodesHelp, "EXIT CODES:\n")),
		Flags:       app.VisibleFlags(),
		Commands:    app.VisibleCommands(),
		HideHelp:    true,
		HideVersion: true,
	}
	page, err := root.ToManWithSection(manSection)
	if err != nil {
		return nil, fmt.Errorf("man page thinback.%d: %w", manSection, err)
	}
	pages[fmt.Sprintf("thinback.%d", manSection)] = page
	for _, cmd := range app.VisibleCommands() {
		name := "thinback-" + cmd.Name
		sub := &cli.App{
			Name:        name,
			Usage:       cmd.Usage,
			UsageText:   "thinback " + cmd.Name + " [options] " + cmd.ArgsUsage,
			Description: manText(cmd.Description),
			Flags:       cmd.VisibleFlags(),
			Commands:    cmd.Subcommands,
			HideHelp:    true,
			HideVersion: true,
		}
		page, err := sub.ToManWithSection(manSection)
		if err != nil {
			return nil, fmt.Errorf("man page %s.%d: %w", name, manSection, err)
		}
		pages[fmt.Sprintf("%s.%d", name, manSection)] = page
	}
	return pages, nil
}

// manText escapes what Markdown would take for markup in a description
// written for the terminal (LV.thinback.<UTC time>, --keep-*), since the
// pages are rendered from Markdown.
func manText(s string) string {
	return strings.NewReplacer(`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "<", `\<`, ">", `\>`, "[", `\[`, "]", `\]`).Replace(s)
}

// manBlock makes text a preformatted block of the page, kept as written.
func manBlock(text string) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}

// writeManPages replaces the pages in dir with those of app (thinback help
// --man DIR, run by go generate): a page of a command that is gone is
// removed, so the directory is exactly what the code generates.
func writeManPages(app *cli.App, dir string) error {
	pages, err := manPages(app)
	if err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, fmt.Sprintf("thinback*.%d", manSection)))
	if err != nil {
		return err
	}
	for _, p := range old {
		if _, keep := pages[filepath.Base(p)]; !keep {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(pages))
	for n := range pages {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(pages[n]), 0o644); err != nil {
			return fmt.Errorf("man page: %w", err)
		}
	}
	return nil
}
