package observability

import (
	"bytes"
	"os"
	"path"
	"testing"

	"go.yaml.in/yaml/v3"
)

const provisioningFile = "deploy/grafana/provisioning/dashboards.yaml"

// dashboardProvisioning is Grafana's dashboard provisioning file format
// (apiVersion 1), the fields Grafana reads.
type dashboardProvisioning struct {
	APIVersion int `yaml:"apiVersion"`
	Providers  []struct {
		Name                  string `yaml:"name"`
		OrgID                 int    `yaml:"orgId"`
		Folder                string `yaml:"folder"`
		FolderUID             string `yaml:"folderUid"`
		Type                  string `yaml:"type"`
		DisableDeletion       bool   `yaml:"disableDeletion"`
		AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
		UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
		Options               struct {
			Path                      string `yaml:"path"`
			FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// TestDashboardProvisioning: the provisioning file is Grafana's format
// (no unknown fields) with one file provider reading an absolute folder.
func TestDashboardProvisioning(t *testing.T) {
	raw, err := os.ReadFile(repoPath(provisioningFile))
	if err != nil {
		t.Fatal(err)
	}
	var p dashboardProvisioning
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", provisioningFile, err)
	}
	if p.APIVersion != 1 {
		t.Errorf("apiVersion %d, want 1", p.APIVersion)
	}
	if len(p.Providers) != 1 {
		t.Fatalf("%d providers, want 1", len(p.Providers))
	}
	pr := p.Providers[0]
	if pr.Name == "" || pr.Type != "file" {
		t.Errorf("provider %q of type %q, want a named file provider", pr.Name, pr.Type)
	}
	if !path.IsAbs(pr.Options.Path) {
		t.Errorf("options.path %q is not an absolute path", pr.Options.Path)
	}
	if pr.UpdateIntervalSeconds <= 0 {
		t.Errorf("updateIntervalSeconds %d", pr.UpdateIntervalSeconds)
	}
}
