#include <tessera/core/cfp8.h>
#include <tessera/core/error.h>
#include <tessera/core/shape.h>
#include <tessera/core/tensor.h>

#include <gtest/gtest.h>

namespace tessera {
namespace {

template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

TEST(Errors, HierarchyMapsCommFailures) {
  EXPECT_THROW(throw TimeoutError("t"), CommError);
  EXPECT_THROW(throw NetworkError("n"), CommError);
  EXPECT_THROW(throw RemoteError("r"), CommError);
  EXPECT_THROW(throw CommError("c"), Error);
  EXPECT_THROW(throw OutOfMemoryError("o"), Error);
}

TEST(Errors, CheckCarriesFileLineAndValues) {
  int bias = 99;
  std::string m = message_of<ValueError>([&] { TESSERA_CHECK(bias < 64, "bias ", bias, " too big"); });
  EXPECT_NE(m.find("bias 99 too big"), std::string::npos) << m;
  EXPECT_NE(m.find("error_test.cc:"), std::string::npos) << m;
  std::string i = message_of<InternalError>([&] { TESSERA_INTERNAL_ASSERT(bias == 1, "bias=", bias); });
  EXPECT_NE(i.find("bias == 1"), std::string::npos) << i;
  EXPECT_NE(i.find("bias=99"), std::string::npos) << i;
}

TEST(Errors, BadShapeNamesTheDimension) {
  std::string m = message_of<ValueError>([] { Shape s{2, -3}; });
  EXPECT_NE(m.find("[2, -3]"), std::string::npos) << m;
  EXPECT_NE(m.find("dimension 1 is -3"), std::string::npos) << m;
}

TEST(Errors, BiasOf64IsRejected) {
  std::string m = message_of<ValueError>([] { Tensor::zeros({2}, DType::cfp8_e4m3, 64); });
  EXPECT_NE(m.find("bias 64"), std::string::npos) << m;
  EXPECT_THROW(check_cfp8_bias(-1), ValueError);
  EXPECT_NO_THROW(check_cfp8_bias(63));
}

TEST(Errors, UnknownDtypeNameIsValueError) {
  std::string m = message_of<ValueError>([] { dtype_from_name("fp13"); });
  EXPECT_NE(m.find("fp13"), std::string::npos) << m;
}

}  // namespace
}  // namespace tessera
