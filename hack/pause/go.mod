module analytics-pipeline/hack/pause

go 1.21
