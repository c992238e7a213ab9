config {
  listen         = "127.0.0.1:9060"
  allow          = ["127.0.0.1:8080", "localhost:9000"]
  max_body_bytes = 5242880
  timeout        = "10s"
}
