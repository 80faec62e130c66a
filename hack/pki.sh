# shellcheck shell=bash
# Sourced by hack/control-plane.sh and hack/cluster.sh: a throwaway CA in a directory, certificates it
# signs (valid 30 days), and kubeconfigs that authenticate with them.

pki_ca() { # pki dir, common name
  mkdir -p "$1"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$2" -keyout "$1/ca.key" -out "$1/ca.crt" 2>/dev/null
}

pki_cert() { # pki dir, name, subject, extensions (openssl x509v3 lines)
  openssl req -new -newkey rsa:2048 -nodes -keyout "$1/$2.key" -subj "$3" -out "$1/$2.csr" 2>/dev/null
  openssl x509 -req -in "$1/$2.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial -days 30 \
    -extfile <(printf '%s\n' "$4") -out "$1/$2.crt" 2>/dev/null
}

pki_kubeconfig() { # pki dir, name (a client certificate in it), server URL, output file
  cat >"$4" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: analytics
  cluster:
    server: $3
    certificate-authority: $1/ca.crt
users:
- name: $2
  user:
    client-certificate: $1/$2.crt
    client-key: $1/$2.key
contexts:
- name: analytics
  context: {cluster: analytics, user: $2}
current-context: analytics
KUBECONFIG
}
