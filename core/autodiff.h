// Reverse-mode autodiff as a graph transform: appends the backward ops of `loss` with respect
// to `wrt` to the same graph (DESIGN §1: one graph, one autodiff, one executor).
//
//   Gradients gr = append_backward(g, loss, g.params());
//   int dw = gr.of(w);                  // value id of dloss/dw
//
// The seed dloss is a graph input named "loss_grad" (shape of the loss), so the executor feeds
// 1, or the loss scale under dynamic loss scaling. A value used several times gets the sum of
// its gradients. An op on the path without a gradient rule raises NotImplementedError.
#pragma once

#include <tessera/core/graph.h>

#include <map>
#include <vector>

namespace tessera {

struct Gradients {
  int seed = -1;                // the "loss_grad" input
  std::map<int, int> grad;      // value id -> gradient value id (only values on the path)
  int of(int value) const;      // ValueError if `value` has no gradient (not on the path)
};

Gradients append_backward(Graph& g, int loss, const std::vector<int>& wrt);

}  // namespace tessera
