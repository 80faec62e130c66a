//! Prints the AnalyticsPipeline CRD as YAML (`make crds` writes it to crds/analyticspipeline.yaml).

fn main() {
    print!("{}", analytics_operator::crd_yaml());
}
